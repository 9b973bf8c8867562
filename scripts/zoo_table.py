#!/usr/bin/env python3
"""Print the zoo table (every preset's protocol, training, test numbers against the published
ones, from the YAML files' pretrained sections: `tfvae.zoo.zoo_table`), or write it into the
README between its zoo-table markers:

    python scripts/zoo_table.py              # print it
    python scripts/zoo_table.py --write      # update README.md (run after shipping a preset)
"""
from __future__ import annotations

import argparse
import os

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", nargs="?", const=README, metavar="FILE",
                   help=f"replace the table between the markers of FILE (default: {README})")
    args = p.parse_args(argv)
    from tfvae.io import atomic_write_text
    from tfvae.zoo import replace_zoo_table, zoo_table

    if args.write is None:
        print(zoo_table(), end="")
        return
    with open(args.write, encoding="utf-8") as f:
        text = f.read()
    try:
        atomic_write_text(args.write, replace_zoo_table(text))
    except ValueError as e:
        raise SystemExit(f"error: {args.write}: {e}")


if __name__ == "__main__":
    main()
