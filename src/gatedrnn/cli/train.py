"""`gatedrnn train | evaluate | table1`: one run from the command line (its flags are TrainConfig's fields)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..nn.counting import table1_rows
from ..train import TrainConfig, evaluate, is_import_path, load_run, name_units, prepare_data, train
from ..utils import resolve_device
from .options import TRAIN_RENAME, add_config_flags, config_from_args, unit_choice


# ----------------------------------------------------------------------------- train
def add_train_command(sub) -> None:
    p = sub.add_parser("train", help="train one model with the paper's protocol",
                       description="Train one model. Writes config.json, metrics.jsonl (one line per epoch), "
                                   "best.pt, checkpoint.pt and result.json into --out. Re-running the same "
                                   "command resumes a killed run where it stopped. Every flag is a field of "
                                   "gatedrnn.train.TrainConfig.")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields (flags override it)")
    add_config_flags(p, TrainConfig, rename=TRAIN_RENAME, metavars={"dataset": "NAME", "data_dir": "DIR"},
                     required=("dataset",), types={"unit": unit_choice})
    p.add_argument("--out", type=Path, help="run directory (default runs/<dataset>-<unit>-seed<seed>)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one line per epoch instead (the default without a terminal)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    fields = _read_config(args.config) if args.config else {}
    fields.update(config_from_args(args, TrainConfig))
    cfg = TrainConfig(**fields)
    if "dataset" not in fields:     # TrainConfig's default is for the Python API; a command line names its data
        raise ValueError("--dataset is required, e.g. --dataset jsb (the names: gatedrnn train --help)"
                         + (f"; {args.config} gives none" if args.config else ""))
    name_units([cfg.unit])     # a unit named by import path: imported (named here) and checked, one line if not
    out = args.out or Path("runs") / f"{_safe_name(cfg.dataset)}-{_safe_unit(cfg.unit)}-seed{cfg.seed}"
    if args.no_resume and out.exists():
        for name in ("checkpoint.pt", "best.pt", "result.json", "metrics.jsonl", "config.json", "model.json"):
            (out / name).unlink(missing_ok=True)
    res = train(cfg, out, progress=not args.no_progress and sys.stderr.isatty(), resume=not args.no_resume,
                log=lambda m: print(m, file=sys.stderr, flush=True))
    _print_result(res, out)
    return 0 if res["status"] != "diverged" else 3


def _read_config(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object of TrainConfig fields")
    return d


def _safe_name(dataset: str) -> str:
    """A folder name for a dataset name ('wav:/a/b' -> 'wav-b')."""
    head, sep, rest = dataset.partition(":")
    return f"{head}-{Path(rest.split('?')[0]).name or 'data'}" if sep else dataset


def _safe_unit(unit: str) -> str:
    """A folder name for a unit ('torch.nn:GRU' -> 'torch.nn_GRU'; registered names are their own)."""
    return unit.replace(":", "_")


def _import_path(s: str) -> str:
    if not is_import_path(s):
        raise argparse.ArgumentTypeError(f"expected package.module:ClassName, got {s!r}")
    return s


def add_import_unit_flag(p) -> None:
    """--import-unit of the commands that rebuild a trained run (evaluate, sample, analyze)."""
    p.add_argument("--import-unit", action="append", type=_import_path, metavar="MODULE:CLASS", default=[],
                   help="import this unit of your own, named by import path in the run's files (a results folder is "
                        "data: the code it names is imported only when named here); repeat for several")


def _per(kind: str) -> str:
    return "frame" if kind == "music" else "step"


def _print_result(res: dict, out: Path) -> None:
    per = _per(res.get("kind"))
    print(f"{res['dataset']} {res['unit']}-{res['hidden_size']} ({res['recurrent_parameters']:,} recurrent "
          f"parameters): status {res['status']}, best epoch {res['best_epoch']} of {res['epochs']}, "
          f"{res['updates']} updates, {res['train_seconds']:.1f} s training")
    print(f"NLL (nats/{per}): train {res['train_nll']:.4f}  valid {res['valid_nll']:.4f}  "
          f"test {res['test_nll']:.4f}")
    print(f"test NLL: {res['test_nll']:.4f} nats/{per}   (run directory: {out})")


# -------------------------------------------------------------------------- evaluate
def add_evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="NLL of a trained run's best model on its data splits")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", action="append", choices=["train", "valid", "test"],
                   help="split(s) to evaluate (default: all three)")
    p.add_argument("--data-dir", help="override the data directory recorded in the run")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_import_unit_flag(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    name_units(args.import_unit)
    device = resolve_device(args.device)
    cfg, spec, model = load_run(args.run_dir, device)
    if args.data_dir:
        cfg = cfg.model_copy(update={"data_dir": args.data_dir})
    ds = prepare_data(cfg)
    rows = {s: evaluate(model, ds.splits[s], cfg.eval_batch_size, device)
            for s in (args.split or ["train", "valid", "test"])}
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        per = _per(spec.kind)
        for s, r in rows.items():
            print(f"{s:5s}  {r['nll']:.4f} nats/{per}   per-sequence mean {r['nll_seqavg']:.4f} "
                  f"(first {per} not scored)   {r['nll_seq']:.2f} nats/sequence   "
                  f"({r['sequences']} sequences, {r['steps']} steps)")
    return 0


# ---------------------------------------------------------------------------- table1
def add_table1_command(sub) -> None:
    p = sub.add_parser("table1", help="print Table 1 (parameter-matched sizes) with our counts beside the paper's")
    p.set_defaults(func=cmd_table1)


def cmd_table1(args) -> int:
    rows = table1_rows()
    print("| task | unit | input | units (ours / paper) | parameters (ours) | ours (k) | paper (k) | agrees |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['unit']} | {r['input_size']} | {r['units']} / {r['units_paper']} | "
              f"{r['parameters']:,} | {r['ours_k']:.1f} | {r['paper_k']:.1f} | {'yes' if r['agrees'] else 'NO'} |")
    print("\nCounting convention: recurrent layer only, one bias per gate, diagonal LSTM peepholes; input 100 "
          "(music, nominal) and 20 (speech).\nGRU-46 (music) has 20,286 parameters: 20.3k at the paper's "
          "precision, which prints 20.2k; agreement is within one unit of the last printed digit.")
    return 0 if all(r["agrees"] for r in rows) else 1
