"""Benchmark the fused units against torch.nn — the same code as `gatedrnn bench` (see its --help).

    python benchmarks/bench.py [--suite music speech] [--repeats 15] [--out benchmarks/results/x.json]
"""
import sys

from gatedrnn.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
