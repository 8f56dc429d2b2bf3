"""`gatedrnn bench`: its flags, the JSON result file and the printed table; the measurement is
gatedrnn.nn.bench (`run`, `markdown`). `python benchmarks/bench.py [flags]` runs the same command.

    gatedrnn bench [--suite music speech] [--unit lstm gru tanh] [--repeats 15] [--reference-repeats 3]
                   [--threads N] [--stacked 10] [--out benchmarks/results/<hostname>-<date>.json]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import socket
import sys
from pathlib import Path

from ..nn.bench import GATES, SUITES, markdown, run

__all__ = ["add_bench_command", "default_out", "main"]


def default_out() -> Path:
    return Path("benchmarks") / "results" / f"{socket.gethostname()}-{_dt.date.today().isoformat()}.json"


def _cmd(args) -> int:
    res = run(suites=tuple(args.suite), repeats=args.repeats, ref_repeats=args.reference_repeats,
              threads=args.threads, units=tuple(args.unit), stacked_K=args.stacked)
    out = Path(args.out) if args.out else default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print()
    print(markdown(res))
    print(f"\nwrote {out}")
    return 0


def add_bench_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="time the fused units against torch.nn (forward+backward, paper sizes)",
        description="Forward+backward time of the paper's units — fused C++ kernels and the reference "
                    "loop — against torch.nn.LSTM/GRU/RNN of the same hidden size, at the paper's music "
                    "and speech sizes; writes a JSON result and prints a Markdown table. Compiles the "
                    "kernels first if needed.")
    p.add_argument("--suite", nargs="+", choices=sorted(SUITES), default=list(SUITES))
    p.add_argument("--unit", nargs="+", choices=list(GATES), default=list(GATES))
    p.add_argument("--repeats", type=int, default=15, help="timed repeats for fused and torch.nn (median)")
    p.add_argument("--reference-repeats", type=int, default=3, help="timed repeats of the slow reference loop")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--stacked", type=int, default=10,
                   help="K for the many-models-as-one lines, one per --unit at the music sizes (0: skip)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<hostname>-<date>.json)")
    p.set_defaults(func=_cmd)
    return p


def main(argv=None) -> int:
    """`gatedrnn bench` with these arguments (benchmarks/bench.py)."""
    from . import main as cli_main
    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
