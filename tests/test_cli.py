"""The command line's parser (gatedrnn/cli): every command and subcommand answers --help at once (exit 0),
an unknown command or flag is one line on stderr with exit code 2, and `gatedrnn table1` prints the counts
of gatedrnn.nn.counting. (What each command does is tested with its module: test_train, test_study*, ...)"""
from __future__ import annotations

import contextlib
import io
import re
import time

import pytest

from gatedrnn.cli import COMMANDS, build_parser, main

POSITIONAL = {"evaluate": ["some/run"], "sample": ["some/run"], "report": ["some/results"],
              "status": ["some/results"], "analyze": ["some/results"]}   # their one required argument
SUBCOMMANDS = [[c] for c in COMMANDS] + [["data", s] for s in ("verify", "stats", "download")]


def _main(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `gatedrnn argv`, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def _every_command_imported():
    build_parser()   # every command's module imported once, so the timings below are the parsers' own


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_every_command_answers_help_at_once(argv):
    t = time.perf_counter()
    code, out, err = _main([*argv, "--help"])
    seconds = time.perf_counter() - t
    assert code == 0 and err == ""
    assert out.startswith(f"usage: gatedrnn {' '.join(argv)}")
    assert seconds < 2.0, f"{argv} --help took {seconds:.1f} s: it does work before parsing"


@pytest.mark.parametrize("argv", [["trian"], ["--bogus"]] + [
    [*a, *POSITIONAL.get(a[0], []), "--no-such-flag"] for a in SUBCOMMANDS], ids=" ".join)
def test_an_unknown_command_or_flag_is_one_line_and_exit_2(argv):
    code, out, err = _main(argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("gatedrnn") and "Traceback" not in err, err
    assert argv[-1] in err or "invalid choice: 'trian'" in err, err


def test_table1_prints_the_counts_of_the_counting_module():
    from gatedrnn.nn.counting import BUDGET, TABLE1, count_parameters, match_hidden_size
    code, out, err = _main(["table1"])
    assert code == 0 and err == ""
    rows = re.findall(r"^\| (music|speech) \| (\w+) \| (\d+) \| (\d+) / (\d+) \| ([\d,]+) \|", out, re.M)
    assert {(task, unit) for task, unit, *_ in rows} == set(TABLE1) and len(rows) == len(TABLE1)
    for task, unit, I, ours, paper, params in rows:
        I, ours, paper = int(I), int(ours), int(paper)
        assert ours == match_hidden_size(unit, I, BUDGET[task])
        assert paper == TABLE1[(task, unit)][0]
        assert int(params.replace(",", "")) == count_parameters(unit, I, ours)
