"""The README's "Using it" commands, run as a new user would: in order, from a fresh shell (bash, no
GATEDRNN_DATA_DIR of its own), after activating the environment that `make` created. Only two things
differ from the text: the epochs are cut to 1 and the commands run in a scratch folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _paths import REPO, data_dir

README = REPO / "README.md"


def using_it_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Using it"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    cmds = []
    for line in block.splitlines():
        cmd = line.split("#", 1)[0].strip()   # the README's comments are not part of the command
        if cmd:
            cmds.append(cmd)
    return cmds


def test_the_readme_opens_with_the_two_make_commands():
    first = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1).splitlines()
    assert [ln.split("#")[0].strip() for ln in first] == ["make reproduce", "make test"]


def test_using_it_commands_run_as_written(tmp_path):
    cmds = using_it_commands()
    assert cmds[0] == "source .venv/bin/activate"
    assert any(c.startswith("gatedrnn train --dataset fsdd") for c in cmds)      # speech is shown
    assert any(c.startswith("gatedrnn sample") and "fsdd" in c for c in cmds)
    venv = Path(sys.executable).parent.parent
    activate = venv / "bin" / "activate"
    if not activate.exists():
        pytest.skip(f"not running inside a virtual environment ({sys.executable})")
    env = {k: v for k, v in os.environ.items() if k not in ("GATEDRNN_DATA_DIR", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"           # a fresh shell: gatedrnn only after activation
    env["OMP_NUM_THREADS"] = "1"
    if "GATEDRNN_DATA_DIR" not in activate.read_text():
        # a venv made by hand rather than by `make setup`: give it what make setup would have added
        env["GATEDRNN_DATA_DIR"] = str(data_dir())
    script = ["set -euo pipefail"]
    for c in cmds:
        c = c.replace("source .venv/bin/activate", f"source {activate}")
        c = re.sub(r"--epochs \d+", "--epochs 1", c)
        script.append(f"echo '+ {c}' >&2")
        script.append(c)
    p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    for f in ("runs/jsb-gru/result.json", "runs/jsb-gru/samples/seed7.mid", "runs/fsdd-a-gru/result.json",
              "runs/fsdd-a-gru/samples/seed0.wav", "results/smoke/report.html"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert "test NLL" in p.stdout and "wrote" in p.stdout
