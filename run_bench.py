#!/usr/bin/env python3
"""UnpairedSR-Bench entry point: `python run_bench.py --help`."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
