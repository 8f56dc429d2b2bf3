"""The command line. Thin: it parses, then calls the modules (everything here is also a Python API).

    gatedrnn train      train one model (paper protocol), resumable
    gatedrnn evaluate   NLL of a trained run on its splits
    gatedrnn sample     draw a piece (MIDI) from a trained music model
    gatedrnn table1     Table 1: parameter counts beside the paper's
    gatedrnn data       verify / stats / download the datasets
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types
import typing
from pathlib import Path


# ------------------------------------------------------------------ flags from a config
# One set of validators for every command: they check what the config fields declare (type, bounds,
# finiteness) and say it in one line; the config model then validates again (cross-field rules).
def _number(kind: type, lo=None, lo_open=False, hi=None, hi_open=False):
    want = ("an integer" if kind is int else "a finite number")
    bounds = [f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else None,
              f"{'<' if hi_open else '<='} {hi:g}" if hi is not None else None]
    want += " " + " and ".join(b for b in bounds if b) if any(bounds) else ""

    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}") from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}")
        if (lo is not None and (v <= lo if lo_open else v < lo)) or \
                (hi is not None and (v >= hi if hi_open else v > hi)):
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}")
        return v
    parse.__name__ = kind.__name__   # argparse names the type in its messages
    return parse


_positive_int = _number(int, 0, True)
_nonneg_int = _number(int, 0)
_float = _number(float)


def _field_type(field):
    """(argparse keyword arguments) for a pydantic field: choices, booleans, bounded numbers."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) in (
        typing.Union, types.UnionType) else [ann]
    base = args[0] if len(args) == 1 else ann
    if typing.get_origin(base) is typing.Literal:
        return {"choices": list(typing.get_args(base))}
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if base in (int, float):
        b = {}
        for m in field.metadata:
            for k in ("gt", "ge", "lt", "le"):
                if getattr(m, k, None) is not None:
                    b[k] = getattr(m, k)
        lo, lo_open = (b["gt"], True) if "gt" in b else (b.get("ge"), False)
        hi, hi_open = (b["lt"], True) if "lt" in b else (b.get("le"), False)
        return {"type": _number(base, lo, lo_open, hi, hi_open)}
    return {"type": str}


def add_config_flags(p, model, fields=None, *, rename=None, defaults=None, metavars=None) -> None:
    """Add one --flag per field of a pydantic model (type, bounds, choices, help and default from the
    field itself), all defaulting to None so that 'not given' is distinguishable from a value."""
    rename, defaults, metavars = rename or {}, defaults or {}, metavars or {}
    for name, field in model.model_fields.items():
        if fields is not None and name not in fields:
            continue
        kw = _field_type(field)
        default = defaults.get(name, field.default)
        shown = "none" if default is None else ("on" if default is True else "off" if default is False else default)
        kw["help"] = f"{field.description or name} (default {shown})".replace("%", "%%")
        if name in metavars:
            kw["metavar"] = metavars[name]
        p.add_argument("--" + rename.get(name, name).replace("_", "-"), dest=name, default=None, **kw)


def config_from_args(args, model, fields=None) -> dict:
    """The fields given on the command line (not None)."""
    names = model.model_fields if fields is None else fields
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


# ----------------------------------------------------------------------------- train
TRAIN_RENAME = {"data_format": "format"}


def add_train_command(sub) -> None:
    from .train import TrainConfig
    p = sub.add_parser("train", help="train one model with the paper's protocol",
                       description="Train one model. Writes config.json, metrics.jsonl (one line per epoch), "
                                   "best.pt, checkpoint.pt and result.json into --out. Re-running the same "
                                   "command resumes a killed run where it stopped. Every flag is a field of "
                                   "gatedrnn.train.TrainConfig.")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields (flags override it)")
    add_config_flags(p, TrainConfig, rename=TRAIN_RENAME, metavars={"dataset": "NAME", "data_dir": "DIR"})
    p.add_argument("--out", type=Path, help="run directory (default runs/<dataset>-<unit>-seed<seed>)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one line per epoch instead (the default without a terminal)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .train import TrainConfig, train
    fields = _read_config(args.config) if args.config else {}
    fields.update(config_from_args(args, TrainConfig))
    cfg = TrainConfig(**fields)
    out = args.out or Path("runs") / f"{_safe_name(cfg.dataset)}-{cfg.unit}-seed{cfg.seed}"
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


def _print_result(res: dict, out: Path) -> None:
    per = "frame" if res.get("kind") == "music" else "step"
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
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from .train import evaluate, load_run, prepare_data
    from .utils import resolve_device
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
        per = "frame" if spec["kind"] == "music" else "step"
        for s, r in rows.items():
            print(f"{s:5s}  {r['nll']:.4f} nats/{per}   {r['nll_seq']:.2f} nats/sequence   "
                  f"({r['sequences']} sequences, {r['steps']} steps)")
    return 0


# ---------------------------------------------------------------------------- sample
def add_sample_command(sub) -> None:
    p = sub.add_parser("sample", help="draw a piece from a trained model (MIDI for music, WAV for speech)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="output file, .mid for music, .wav for speech (default "
                                            "RUN_DIR/samples/seed<SEED>.mid or .wav)")
    p.add_argument("--steps", type=_positive_int, default=128, help="music: frames to draw (default 128)")
    p.add_argument("--seconds", type=_number(float, 0, True), default=2.0,
                   help="speech: seconds of audio to draw (default 2)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--temperature", type=_number(float, 0, True), default=1.0,
                   help="sharpen (< 1) or flatten (> 1) the output distribution (default 1)")
    p.add_argument("--prime", type=_nonneg_int, default=0,
                   help="condition on the start of the first test sequence: N frames (music) or N samples "
                        "(speech) (default 0: none)")
    p.add_argument("--data-dir", help="data directory (only needed with --prime; default: where the run read it)")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    from .train import load_run, prepare_data
    cfg, spec, model = load_run(args.run_dir)
    if args.out is None:
        args.out = args.run_dir / "samples" / f"seed{args.seed}{'.mid' if spec['kind'] == 'music' else '.wav'}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if spec["kind"] != "music":
        from .audio import sample_speech_cli  # speech: WAV output
        return sample_speech_cli(args, cfg, spec, model)
    from .sample import DEFAULT_FRAME_SECONDS, FRAME_SECONDS, roll_to_midi, sample_music
    if args.out.suffix.lower() not in (".mid", ".midi"):
        raise ValueError(f"--out must end in .mid or .midi for a music model, got {args.out}")
    prime = None
    if args.prime:
        if args.data_dir:
            cfg = cfg.model_copy(update={"data_dir": args.data_dir})
        prime = prepare_data(cfg).splits["test"][0][1][: args.prime]
    roll = sample_music(model, args.steps, seed=args.seed, temperature=args.temperature, prime=prime)
    meta = spec.get("meta", {})
    n = roll_to_midi(roll, args.out, lowest_pitch=int(meta.get("lowest_pitch", 21)),
                     frame_seconds=meta.get("frame_seconds")  # midi:FOLDER sets record their frame length
                     or FRAME_SECONDS.get(spec["dataset"], DEFAULT_FRAME_SECONDS))
    print(f"wrote {args.out}: {len(roll)} frames, {n} notes, mean {roll.sum(1).mean():.2f} notes/frame "
          f"(seed {args.seed}, temperature {args.temperature})")
    return 0


# ---------------------------------------------------------------------------- table1
def add_table1_command(sub) -> None:
    p = sub.add_parser("table1", help="print Table 1 (parameter-matched sizes) with our counts beside the paper's")
    p.set_defaults(func=cmd_table1)


def cmd_table1(args) -> int:
    from .nn.counting import table1_rows
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


# ------------------------------------------------------------------------------ main
class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the flag and what was expected (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = _Parser(
        prog="gatedrnn",
        description="Reproduce Chung et al. 2014: tanh-RNN vs LSTM vs GRU on polyphonic music and raw speech.")
    parser.add_argument("--version", action="version", version=f"gatedrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_command(sub)
    add_evaluate_command(sub)
    add_sample_command(sub)
    add_table1_command(sub)
    from .nn.bench import add_bench_command
    from .data.cli import add_data_commands
    from .study.cli import add_study_commands
    add_data_commands(sub)
    add_bench_command(sub)
    add_study_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from pydantic import ValidationError

    from .data import DataError
    from .data.sources import DataNotFoundError
    try:
        return int(args.func(args) or 0)
    except ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "config"
            print(f"gatedrnn: error: invalid value for {loc}: {err['msg']}", file=sys.stderr)
        return 2
    except BrokenPipeError:          # `gatedrnn table1 | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except DataNotFoundError as e:
        print(f"gatedrnn: error: {e} — point --data-dir (or GATEDRNN_DATA_DIR) at a folder holding the data, "
              f"or fetch it with `gatedrnn data download`", file=sys.stderr)
        return 2
    except (DataError, ValueError, OSError) as e:   # bad input: one line, no traceback
        print(f"gatedrnn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gatedrnn: interrupted; finished epochs are checkpointed — rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
