#!/usr/bin/env python3
"""Throughput of tfvae's training and evaluation on this machine; the same as `tfvae bench`.

  python scripts/benchmark.py --vs-torch          # all figures, with the PyTorch ratios
  python scripts/benchmark.py --only train --batch-size 128 --precision mixed_bfloat16

See `python scripts/benchmark.py --help` and the README's "Performance" section for what
each figure means.
"""
import sys

from tfvae.bench import main

if __name__ == "__main__":
    sys.exit(main())
