"""One epoch of each unit on each music set, as a study's run trains it (one thread, the training split
evaluated every 10th epoch as a halving study does, so an epoch = training pass + validation split): the
per-epoch cost a study's estimate multiplies by its epochs (docs/STUDY.md). Median of epochs 1..E.

    python benchmarks/epoch_cost.py [--epochs 4] [--out benchmarks/results/epoch_cost-DATE.json]
    python benchmarks/epoch_cost.py --epochs 3 --units gru,mingru,minlstm --out benchmarks/results/epoch_cost_min-DATE.json
    python benchmarks/epoch_cost.py --datasets jsb --units tanh,gru,lstm,mingru,minlstm \
        --budgets 5000,20000,80000,320000 --out benchmarks/results/epoch_cost_size-DATE.json

--budgets: each unit at each recurrent-parameter budget (TrainConfig.budget, the size axis of a study:
`reproduce --param-budgets`), rows "dataset/unit@budget" with the hidden size and parameters that ran;
without it, Table 1's sizes (rows "dataset/unit"). The machine's load average is recorded before and after:
on a loaded machine the medians are upper bounds of the idle cost. The units of one dataset are timed one
after the other; compare units by their ratio within one file.

The measurement lives in benchmarks/study_cost.py (`--epoch-cost E`), the one benchmark of the training
loop's cost: it times train.train itself through the loop's timing hooks (gatedrnn.train.LoopTimer). This
command line and its result file are kept; rows now also carry each epoch's checkpoint I/O (`io_s`, not in
the epoch's time, as before) and its phases. (Until 2026-12-03 this script timed the epoch from
metrics.jsonl: the training seconds and the evaluation seconds the loop records, which are the same spans.)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_cost  # noqa: E402  (beside this file)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--datasets", type=_csv, default=list(study_cost.DATASETS))
    ap.add_argument("--units", type=_csv, default=list(study_cost.UNITS))
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in _csv(s)],
                    help="recurrent-parameter budgets, e.g. 5000,20000,80000,320000 (default: Table 1's sizes)")
    ap.add_argument("--lr", type=float, default=3e-3, help="the runs' learning rate (no effect on the cost "
                    "unless a run diverges: then its epochs after divergence are not measured)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    study_cost.epoch_cost(args.epochs, args.out, datasets=args.datasets, units=args.units, budgets=args.budgets,
                          lr=args.lr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
