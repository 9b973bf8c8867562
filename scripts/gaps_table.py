#!/usr/bin/env python3
"""Print the README's comparison of the inference gaps of the trained presets (from the
`docs/gaps_<preset>/gaps.json` that `tfvae gaps PRESET --out docs/gaps_PRESET` writes:
`tfvae.inference.gaps.gap_comparison_table`), or write it into the README between its
gaps-table markers:

    python scripts/gaps_table.py              # print it
    python scripts/gaps_table.py --write      # update README.md (after adding a report)
"""
from __future__ import annotations

import argparse
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", nargs="?", const=README, metavar="FILE",
                   help=f"replace the table between the markers of FILE (default: {README})")
    p.add_argument("--reports", default=os.path.join(REPO, "docs"),
                   help="the directory holding gaps_<preset>/gaps.json (default: the repository's docs/)")
    args = p.parse_args(argv)
    from tfvae.inference.gaps import gap_comparison_table, read_gap_reports, replace_gap_table
    from tfvae.io import atomic_write_text

    reports = read_gap_reports(args.reports)
    if not reports:
        raise SystemExit(f"error: no gaps_<preset>/gaps.json under {args.reports}")
    if args.write is None:
        print(gap_comparison_table(reports), end="")
        return
    with open(args.write, encoding="utf-8") as f:
        text = f.read()
    try:
        atomic_write_text(args.write, replace_gap_table(text, reports))
    except ValueError as e:
        raise SystemExit(f"error: {args.write}: {e}")


if __name__ == "__main__":
    main()
