"""The command line. Thin: it parses, then calls the modules (everything here is also a Python API).

    gatedrnn train      train one model (paper protocol), resumable           (.train)
    gatedrnn evaluate   NLL of a trained run on its splits                    (.train)
    gatedrnn sample     draw a piece (MIDI) or audio (WAV) from a trained run  (.generate)
    gatedrnn table1     Table 1: parameter counts beside the paper's          (.train)
    gatedrnn data       verify / stats / download the datasets                (.data)
    gatedrnn bench      time the fused units                                  (gatedrnn.nn.bench)
    gatedrnn reproduce  the whole study; report, status                       (.study)

This module holds the parser and main() (bad input: one line, exit 2); options.py what every command
shares (the flags generated from a pydantic config, one set of validators).
"""
from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from .. import __version__
from ..data import DataError, DataNotFoundError
from ..nn.bench import add_bench_command
from . import data, generate, study, train   # the command groups


# ------------------------------------------------------------------------------------ main
class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the flag and what was expected (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gatedrnn",
        description="Reproduce Chung et al. 2014: tanh-RNN vs LSTM vs GRU on polyphonic music and raw speech.")
    parser.add_argument("--version", action="version", version=f"gatedrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_train_command(sub)
    train.add_evaluate_command(sub)
    generate.add_sample_command(sub)
    train.add_table1_command(sub)
    data.add_data_commands(sub)
    add_bench_command(sub)
    study.add_study_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
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
        hint = "" if "--data-dir" in str(e) else (" — point --data-dir (or GATEDRNN_DATA_DIR) at a folder holding "
                                                 "the data, or fetch it with `gatedrnn data download`")
        print(f"gatedrnn: error: {e}{hint}", file=sys.stderr)
        return 2
    except (DataError, ValueError, OSError) as e:   # bad input: one line, no traceback
        print(f"gatedrnn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gatedrnn: interrupted; finished epochs are checkpointed — rerun the same command to resume",
              file=sys.stderr)
        return 130
