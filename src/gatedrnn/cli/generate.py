"""`gatedrnn sample`: draw from a trained run (gatedrnn.generate)."""
from __future__ import annotations

from pathlib import Path

from ..generate import generate_from_run
from ..train import name_units
from .options import nonneg_int, number, positive_int
from .train import add_import_unit_flag


def add_sample_command(sub) -> None:
    p = sub.add_parser("sample", help="draw a piece from a trained model (MIDI for music, WAV for speech)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="output file, .mid for music, .wav for speech (default "
                                            "RUN_DIR/samples/seed<SEED>.mid or .wav)")
    p.add_argument("--steps", type=positive_int, default=128, help="music: frames to draw (default 128)")
    p.add_argument("--seconds", type=number(float, 0, True), default=2.0,
                   help="speech: seconds of audio to draw (default 2)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--temperature", type=number(float, 0, True), default=1.0,
                   help="sharpen (< 1) or flatten (> 1) the output distribution (default 1)")
    p.add_argument("--prime", type=nonneg_int, default=0,
                   help="condition on the start of the first test sequence: N frames (music) or N samples "
                        "(speech) (default 0: none)")
    p.add_argument("--data-dir", help="data directory (only needed with --prime; default: where the run read it)")
    add_import_unit_flag(p)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    name_units(args.import_unit)
    print(generate_from_run(args.run_dir, args.out, seed=args.seed, temperature=args.temperature,
                            steps=args.steps, seconds=args.seconds, prime=args.prime, data_dir=args.data_dir))
    return 0
