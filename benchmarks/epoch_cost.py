"""One epoch of each paper unit on each music set, as a study's run trains it (one thread, the training
split evaluated every 10th epoch as a halving study does, so an epoch = training pass + validation split):
the per-epoch cost a study's estimate multiplies by its epochs (docs/STUDY.md). Median of epochs 1..E.

    python benchmarks/epoch_cost.py [--epochs 4] [--out benchmarks/results/epoch_cost-DATE.json]

The measurement lives in benchmarks/study_cost.py (`--epoch-cost E`), the one benchmark of the training
loop's cost: it times train.train itself through the loop's timing hooks (gatedrnn.train.LoopTimer). This
command line and its result file are kept; rows now also carry each epoch's checkpoint I/O (`io_s`, not in
the epoch's time, as before) and its phases. (Until 2026-12 this script timed the epoch from metrics.jsonl:
the training seconds and the evaluation seconds the loop records, which are the same spans.)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_cost  # noqa: E402  (beside this file)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    study_cost.epoch_cost(args.epochs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
