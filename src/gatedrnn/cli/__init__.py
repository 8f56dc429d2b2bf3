"""The command line. Thin: it parses, then calls the modules (everything here is also a Python API).

    gatedrnn train      train one model (paper protocol), resumable           (.train)
    gatedrnn evaluate   NLL of a trained run on its splits                    (.train)
    gatedrnn sample     draw a piece (MIDI) or audio (WAV) from a trained run  (.generate)
    gatedrnn table1     Table 1: parameter counts beside the paper's          (.train)
    gatedrnn data       verify / stats / download the datasets                (.data)
    gatedrnn bench      time the fused units                                  (.bench, gatedrnn.nn.bench)
    gatedrnn reproduce  the whole study; report, status                       (.study)

This module holds the parser and main() (bad input: one line, exit 2); options.py what every command
shares (the flags generated from a pydantic config, one set of validators). It imports no command module
itself: main() builds the flags of the command given only (COMMANDS), so `gatedrnn --help` lists the
commands in ~0.2 s instead of importing torch, pydantic and the rest (~3 s).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__

# Every command: (module, the function that adds its group of commands, its one-line help), in the order
# of `gatedrnn --help`. A command's module (and with it torch and pydantic, ~3 s to import) is imported
# only when that command runs: `gatedrnn --help` names the commands from this table alone (the help
# strings equal the ones the modules give; tested).
COMMANDS = {
    "train": ("gatedrnn.cli.train", "add_train_command", "train one model with the paper's protocol"),
    "evaluate": ("gatedrnn.cli.train", "add_evaluate_command", "NLL of a trained run's best model on its data splits"),
    "sample": ("gatedrnn.cli.generate", "add_sample_command",
               "draw a piece from a trained model (MIDI for music, WAV for speech)"),
    "table1": ("gatedrnn.cli.train", "add_table1_command",
               "print Table 1 (parameter-matched sizes) with our counts beside the paper's"),
    "data": ("gatedrnn.cli.data", "add_data_commands", "verify / stats / download the datasets"),
    "bench": ("gatedrnn.cli.bench", "add_bench_command",
              "time the fused units against torch.nn (forward+backward, paper sizes)"),
    "reproduce": ("gatedrnn.cli.study", "add_study_commands",
                  "the whole study: lr search, seeds, Table 1/2, learning curves, report.html"),
    "report": ("gatedrnn.cli.study", "add_study_commands",
               "rebuild tables, figures and report.html of a results directory (no training)"),
    "analyze": ("gatedrnn.cli.study", "add_study_commands",
                "gradient flow, context and gates of trained models, on test data"),
    "status": ("gatedrnn.cli.study", "add_study_commands", "what is done, running and failed in a results directory"),
}


# ------------------------------------------------------------------------------------ main
class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the flag and what was expected (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The parser of every command (commands=None), or with every command's flags only for `commands`
    (names; the others are listed with their help: enough for `gatedrnn --help` without importing them)."""
    parser = _Parser(
        prog="gatedrnn",
        description="Reproduce Chung et al. 2014: tanh-RNN vs LSTM vs GRU on polyphonic music and raw speech.")
    parser.add_argument("--version", action="version", version=f"gatedrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    full = {COMMANDS[c][:2] for c in (COMMANDS if commands is None else commands) if c in COMMANDS}
    added = set()
    for name, (module, adder, help_) in COMMANDS.items():
        if (module, adder) not in full:
            sub.add_parser(name, help=help_)
        elif (module, adder) not in added:      # a group adds all its commands at once
            getattr(importlib.import_module(module), adder)(sub)
            added.add((module, adder))
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The command word: the first argument that is not an option (the top level has no option with a
    value), None if there is none (`gatedrnn`, `gatedrnn --help`)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    parser = build_parser([command] if command in COMMANDS else [])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:          # `gatedrnn table1 | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("gatedrnn: interrupted; finished epochs are checkpointed — rerun the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 — bad input is one line (exit 2); anything else re-raised
        lines = _bad_input(e)
        if lines is None:
            raise
        for line in lines:
            print(f"gatedrnn: error: {line}", file=sys.stderr)
        return 2


def _bad_input(e: Exception) -> list[str] | None:
    """The message lines of an exception that is bad input (a config value, data, a file), else None.
    The classes are looked up where they live only if their modules were imported: an exception of a
    module never imported cannot be one of its classes (and `--help` stays free of those imports)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(e, pydantic.ValidationError):
        return [f"invalid value for {'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg']}"
                for err in e.errors()]
    sources = sys.modules.get("gatedrnn.data.sources")
    if sources is not None and isinstance(e, sources.DataNotFoundError):
        hint = "" if "--data-dir" in str(e) else (" — point --data-dir (or GATEDRNN_DATA_DIR) at a folder holding "
                                                 "the data, or fetch it with `gatedrnn data download`")
        return [f"{e}{hint}"]
    if isinstance(e, (ValueError, OSError)) or (sources is not None and isinstance(e, sources.DataError)):
        return [str(e)]
    return None
