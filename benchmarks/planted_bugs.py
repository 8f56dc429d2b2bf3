#!/usr/bin/env python
"""Planted bugs: does the test suite catch the bugs that matter, in the module's own test file?

For each mutation below, one at a time, in a scratch copy of the repository:
  1. copy the repository's files (`git ls-files`, tracked and untracked-not-ignored, working-tree
     contents; results/ left out) into a temporary directory;
  2. apply ONE realistic bug by exact string replacement — the original string must occur exactly the
     expected number of times, else the script stops loudly (the code moved: update the mutation);
  3. run the module's own test file(s) with pytest from the copy, PYTHONPATH=<copy>/src (checked: the
     copy's gatedrnn is the one imported), GATEDRNN_NO_KERNELS unset (the fused kernels as in CI),
     GATEDRNN_DATA_DIR set to the shared data;
  4. record caught (pytest failed) or missed (pytest passed), the first failing test and the seconds.

Before any mutation the same test selections run on the unmutated copy and must pass: otherwise a
"caught" would mean nothing. Exit code 0 only if the baseline is green and every mutation is caught.

    .venv/bin/python benchmarks/planted_bugs.py                  # all; writes benchmarks/results/planted_bugs.md
    .venv/bin/python benchmarks/planted_bugs.py --only gru-reset-after,mdn-component-0
    .venv/bin/python benchmarks/planted_bugs.py --list

Not part of `make test` (about 15-25 minutes on 2 cores: one pytest process per mutation).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "planted_bugs.md"


@dataclass
class Mutation:
    name: str
    module: str                     # path in the repository
    old: str
    new: str
    tests: list[str]                # the module's own test file(s)
    what: str                       # the bug, in words
    count: int = 1                  # occurrences of `old` that must exist (all are replaced)
    select: list[str] = field(default_factory=list)   # extra pytest args (-k / -m) for slow files


M = Mutation
MUTATIONS = [
    # ------------------------------------------------------------------ the units' cell() equations
    M("gru-reset-after", "src/gatedrnn/nn/gru.py",
      'h_tilde = torch.tanh(Wx + (r * h) @ p["U"].mT)', 'h_tilde = torch.tanh(Wx + r * (h @ p["U"].mT))',
      ["tests/test_nn_units.py"], "GRU (paper form): reset applied after U, r ⊙ (U h), instead of U (r ⊙ h)"),
    M("lstm-output-gate-c_prev", "src/gatedrnn/nn/lstm.py",
      '        c = f * c + i * c_tilde                                                      # c_t\n'
      '        o = torch.sigmoid(Wx_o + h @ p["U_o"].mT + (p["v_o"] * c if peep else 0))  # o_t peeks at c_t\n'
      '        h = o * torch.tanh(c)                                                        # h_t\n'
      '        self.observe(i=i, f=f, o=o)\n'
      '        return (h, c)',
      '        c_new = f * c + i * c_tilde\n'
      '        o = torch.sigmoid(Wx_o + h @ p["U_o"].mT + (p["v_o"] * c if peep else 0))\n'
      '        h = o * torch.tanh(c_new)\n'
      '        self.observe(i=i, f=f, o=o)\n'
      '        return (h, c_new)',
      ["tests/test_nn_units.py"], "LSTM: output gate peeks at c_{t−1} instead of c_t"),
    M("gru-update-gate-swapped", "src/gatedrnn/nn/gru.py",
      "return (1 - z) * h + z * h_tilde", "return z * h + (1 - z) * h_tilde",
      ["tests/test_nn_units.py"], "GRU: h_t = z ⊙ h_{t−1} + (1 − z) ⊙ h̃_t (the torch.nn convention, not the paper's)"),
    M("lstm-forget-peephole-v_i", "src/gatedrnn/nn/lstm.py",
      'f = torch.sigmoid(Wx_f + h @ p["U_f"].mT + (p["v_f"] * c if peep else 0))',
      'f = torch.sigmoid(Wx_f + h @ p["U_f"].mT + (p["v_i"] * c if peep else 0))',
      ["tests/test_nn_units.py"], "LSTM: forget gate uses the input gate's peephole v_i"),
    M("tanh-U-transposed", "src/gatedrnn/nn/tanh.py",
      'return torch.tanh(wx_t + h @ p["U"].mT)', 'return torch.tanh(wx_t + h @ p["U"])',
      ["tests/test_nn_units.py"], "tanh-RNN: h_{t−1} U instead of U h_{t−1} (U transposed)"),
    # ------------------------------------------------------------------ masks: padding and batching
    M("unit-mask-off-by-one", "src/gatedrnn/nn/base.py",
      "mask = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0))",
      "mask = (torch.arange(T).unsqueeze(1) <= lengths.unsqueeze(0))",
      ["tests/test_nn_units.py"], "unit forward: padding mask t <= length (the first padded step leaks into the state)"),
    M("batch-mask-off-by-one", "src/gatedrnn/data/batching.py",
      "mask = np.arange(T)[None, :] < lens[:, None]", "mask = np.arange(T)[None, :] <= lens[:, None]",
      ["tests/test_batching.py"], "collate: loss mask covers the first padded step"),
    # ------------------------------------------------------------------ selection and the tables
    M("lr-select-on-test", "src/gatedrnn/study/grid.py",
      'return min(ok, key=lambda r: (float(r["valid_nll"]), float(r["lr"])))',
      'return min(ok, key=lambda r: (float(r.get("test_nll") if r.get("test_nll") is not None else r["valid_nll"]), '
      'float(r["lr"])))',
      ["tests/test_study.py"], "learning-rate selection on test NLL instead of validation NLL"),
    M("runner-up-is-worst", "src/gatedrnn/study/tables.py", "ranked[1]", "ranked[-1]",
      ["tests/test_study_tables.py"], "significance table: the worst unit instead of the runner-up", count=3),
    M("holm-dropped", "src/gatedrnn/study/tables.py",
      'adj, rej = holm([r["p"] if r["p"] is not None else math.nan for r in out], ALPHA)',
      'adj, rej = ([r["p"] if r["p"] is not None else math.nan for r in out], '
      '[r["p"] is not None and r["p"] <= ALPHA for r in out])',
      ["tests/test_study_tables.py"], "significance table: raw p-values, no Holm correction"),
    M("diverged-seeds-averaged", "src/gatedrnn/study/tables.py",
      's["row"] is not None and s["status"] in OK_STATUSES]',
      's["row"] is not None and s["status"] in (*OK_STATUSES, "diverged")]',
      ["tests/test_study_tables.py"], "tables: diverged seeds averaged into the means (and paired in the test)"),
    M("ci-normal-not-t", "src/gatedrnn/study/stats.py",
      "t = float(_st.t.ppf((1 + level) / 2, n - 1))", "t = float(_st.norm.ppf((1 + level) / 2))",
      ["tests/test_study.py"], "mean ± CI with the normal quantile 1.96 instead of Student t_{n−1}"),
    M("holm-is-bonferroni", "src/gatedrnn/study/stats.py",
      "running = max(running, min(1.0, (m - rank) * p[i]))", "running = max(running, min(1.0, m * p[i]))",
      ["tests/test_study.py"], "Holm step-down replaced by plain Bonferroni"),
    # ------------------------------------------------------------------ the optimiser protocol
    M("no-gradient-rescaling", "src/gatedrnn/train.py",
      "gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)",
      "gnorm = torch.linalg.vector_norm(torch.stack([q.grad.norm() for q in model.parameters() "
      "if q.grad is not None]))",
      ["tests/test_train.py"], "train(): gradient norm computed (divergence check) but never rescaled",
      select=["-m", "not slow"]),
    M("rmsprop-torch-default-alpha", "src/gatedrnn/train.py",
      "alpha=cfg.rms_decay, eps=1e-6", "alpha=0.99, eps=1e-6",
      ["tests/test_train.py"], "plain RMSProp with torch's default decay 0.99 instead of 0.95",
      select=["-m", "not slow"]),
    M("lr-decay-off-by-one", "src/gatedrnn/train.py",
      'g["lr"] = lr_at(cfg, epoch - 1)', 'g["lr"] = lr_at(cfg, epoch)',
      ["tests/test_train.py"], "training loop: epoch e trains with lr_at(e) (decay one epoch early)",
      select=["-m", "not slow"]),
    M("lr-decay-formula", "src/gatedrnn/train.py",
      "return cfg.lr * (1 - frac * (1 - cfg.lr_final))", "return cfg.lr * (1 - frac * cfg.lr_final)",
      ["tests/test_train.py"], "lr_at: decays to lr·(1 − lr_final) instead of lr·lr_final",
      select=["-m", "not slow"]),
    M("rms-floor-added", "src/gatedrnn/train.py",
      'v.sqrt().clamp_min_(group["floor"])', 'v.sqrt().add_(group["floor"])',
      ["tests/test_train.py"], "RMSPropMomentum: √v + floor instead of max(√v, floor)",
      select=["-m", "not slow"]),
    M("divergence-exit-0", "src/gatedrnn/cli/train.py",
      'return 0 if res["status"] != "diverged" else 3', "return 0",
      ["tests/test_train.py"], "`gatedrnn train` exits 0 on a diverged run", select=["-m", "not slow"]),
    # ------------------------------------------------------------------ kernels and analysis
    M("kernel-padded-activations-unwritten", "src/gatedrnn/kernels/fused.cpp",
      "            if (!infer && at) {   // defined activations (recycled buffers; the deferred backward reads every row)\n"
      "                std::memset(at + i * GH, 0, GH * sizeof(T));\n"
      "                std::memset(ut + i * H, 0, H * sizeof(T));\n"
      "            }\n", "",
      ["tests/test_kernels.py"], "fused forward: the activations of padded rows left unwritten (0·NaN in the "
      "deferred weight gradients)", select=["-k", "no_unwritten"]),
    M("gradient-flow-batch-norm", "src/gatedrnn/analysis.py",
      "g[:, k] = grad.norm(dim=1).numpy()", "g[:, k] = grad.norm().numpy()",
      ["tests/test_analysis.py"], "gradient flow: one norm over the whole batch instead of one per window"),
    M("gate-trace-wrong-gate", "src/gatedrnn/nn/gru.py",
      "self.observe(z=z, r=r)", "self.observe(z=r, r=z)",
      ["tests/test_analysis.py"], "gate trace: the GRU reports r as z"),
    # ------------------------------------------------------------------ failure paths of the sweep
    M("run-one-raises", "src/gatedrnn/study/executor.py",
      "        if isinstance(e, KeyboardInterrupt):\n            raise\n",
      "        raise\n", ["tests/test_study.py"], "run_one lets exceptions escape instead of recording 'failed'"),
    M("failed-never-retried", "src/gatedrnn/study/runner.py",
      'if row is not None and row["status"] == RunStatus.FAILED and spec.run_id in tried:',
      'if row is not None and row["status"] == RunStatus.FAILED:',
      ["tests/test_study_e2e.py"], "sweep: a run that failed before is not retried by the next invocation",
      select=["-k", "retried"]),
    M("workers-outlive-sweep", "src/gatedrnn/study/executor.py",
      "    _die_with_parent()\n", "    pass\n",
      ["tests/test_study_e2e.py"], "local workers without PR_SET_PDEATHSIG: they train on after the sweep dies",
      select=["-k", "sigterm"]),
    # ------------------------------------------------------------------ speech: sampling and data checks
    M("mdn-component-0", "src/gatedrnn/heads.py",
      "k = torch.multinomial(w, 1, generator=generator).reshape(*lead, 1, 1)",
      "k = torch.zeros(w.shape[0], 1, dtype=torch.long, device=w.device).reshape(*lead, 1, 1)",
      ["tests/test_mdn.py"], "MDN sampling always draws from component 0"),
    M("mdn-temperature-inverted", "src/gatedrnn/heads.py",
      "w = torch.softmax(log_pi / temperature, dim=-1)", "w = torch.softmax(log_pi * temperature, dim=-1)",
      ["tests/test_mdn.py"], "MDN sampling with weights ∝ π^T instead of π^{1/T}"),
    M("manifest-digest-skipped", "src/gatedrnn/data/speech.py",
      "if path == MANIFEST and sha256_file(path) != MANIFEST_SHA256:", "if False:",
      ["tests/test_speech.py"], "FSDD: the packaged manifest's own sha256 is not checked",
      select=["-k", "tampered or folder_checks or downloader"]),
    M("fsdd-mismatch-ignored", "src/gatedrnn/data/speech.py",
      'bad = [r for r in rows if r["status"] == "mismatch"]', "bad = []",
      ["tests/test_speech.py"], "FSDD folder check: checksum mismatches ignored",
      select=["-k", "tampered or folder_checks or downloader"]),
    M("music-checksum-skipped", "src/gatedrnn/data/sources.py",
      "elif actual != kf.sha256:", "elif False:",
      ["tests/test_data_sources.py"], "data sources: a local file's checksum mismatch is accepted"),
]


def git_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and not f.startswith("results/")]


def make_copy(dst: Path) -> None:
    for rel in git_files():
        src = REPO / rel
        if not src.is_file():           # deleted in the working tree
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


def env_for(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GATEDRNN_NO_KERNELS", "PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    env["PYTHONPATH"] = str(copy / "src")
    env.setdefault("GATEDRNN_DATA_DIR", str((REPO.parent / "shared" / "data").resolve()))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_import(copy: Path) -> str:
    r = subprocess.run([sys.executable, "-c", "import gatedrnn; print(gatedrnn.__file__)"], cwd=copy,
                       env=env_for(copy), capture_output=True, text=True, check=True)
    f = r.stdout.strip()
    if not Path(f).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the copy is not what gets imported: gatedrnn.__file__ = {f}")
    return f


def run_tests(copy: Path, m: Mutation, timeout: float) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *m.tests,
           *m.select]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True, text=True, timeout=timeout)
        code, text = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        code, text = -1, f"TIMEOUT after {timeout:.0f} s\n{(e.stdout or b'')[-2000:]!r}"
    return code, time.time() - t0, text


def first_failure(text: str) -> str:
    m = re.search(r"^FAILED (\S+)", text, re.M) or re.search(r"^ERROR (\S+)", text, re.M)
    return m.group(1).split("::", 1)[-1] if m else ""


def apply(copy: Path, m: Mutation) -> None:
    p = copy / m.module
    s = p.read_text()
    n = s.count(m.old)
    if n != m.count:
        raise SystemExit(f"mutation {m.name}: expected {m.count} occurrence(s) of the original string in "
                         f"{m.module}, found {n} — the code moved; update benchmarks/planted_bugs.py\n"
                         f"original string:\n{m.old}")
    p.write_text(s.replace(m.old, m.new))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated mutation names")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run (not for the record)")
    ap.add_argument("--out", type=Path, default=RESULT, help="markdown result (none with --only)")
    args = ap.parse_args(argv)
    muts = MUTATIONS
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in MUTATIONS}
        if unknown:
            raise SystemExit(f"unknown mutation(s): {sorted(unknown)}")
        muts = [m for m in MUTATIONS if m.name in names]
    if args.list:
        for m in muts:
            print(f"{m.name:28s} {m.module:34s} {' '.join(m.tests + m.select)}")
        return 0

    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        # the copies sit where a checkout sits on CI: with ../shared beside them (tests that clear
        # GATEDRNN_DATA_DIR fall back to <repo>/../shared/data, tests/_paths.py)
        shared = (REPO.parent / "shared").resolve()
        if shared.is_dir():
            (Path(tmp) / "shared").symlink_to(shared, target_is_directory=True)
        base = Path(tmp) / "pristine"
        make_copy(base)
        # every original string is checked before anything runs: a moved line fails fast
        for m in muts:
            n = (base / m.module).read_text().count(m.old)
            if n != m.count:
                raise SystemExit(f"mutation {m.name}: expected {m.count} occurrence(s) in {m.module}, found {n} — "
                                 "the code moved; update benchmarks/planted_bugs.py")
        imported = check_import(base)
        print(f"scratch copy: {base} (gatedrnn imported from {imported})", flush=True)
        baseline = []
        if not args.no_baseline:
            seen = set()
            for m in muts:
                key = tuple(m.tests + m.select)
                if key in seen:
                    continue
                seen.add(key)
                code, secs, text = run_tests(base, m, args.timeout)
                baseline.append((" ".join(key), code == 0, secs))
                print(f"baseline {' '.join(key):60s} {'green' if code == 0 else 'RED'}  {secs:.0f} s", flush=True)
                if code != 0:
                    ok = False
                    print(text[-3000:], flush=True)
        for m in muts:
            work = Path(tmp) / m.name
            shutil.copytree(base, work)
            apply(work, m)
            check_import(work)
            code, secs, text = run_tests(work, m, args.timeout)
            caught = code not in (0, 5) and code != -1    # 5: no test collected; -1: timeout (not a verdict)
            ok &= caught
            rows.append((m, caught, secs, first_failure(text) if caught else ("TIMEOUT" if code == -1 else ""),
                         code))
            print(f"{m.name:28s} {'caught' if caught else 'MISSED'}  {secs:5.0f} s  "
                  f"{' '.join(m.tests)}  {first_failure(text)}", flush=True)
            shutil.rmtree(work, ignore_errors=True)

    lines = ["| mutation | module | bug | caught | test file (selection) | first failing test | seconds |",
             "|---|---|---|---|---|---|---|"]
    for m, caught, secs, fail, code in rows:
        sel = f" ({' '.join(m.select)})" if m.select else ""
        lines.append(f"| {m.name} | `{m.module.removeprefix('src/gatedrnn/')}` | {m.what} | "
                     f"{'yes' if caught else '**NO**'} | `{' '.join(m.tests)}`{sel} | `{fail or '–'}` | {secs:.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    if not args.only and args.out:
        base_lines = "\n".join(f"| `{k}` | {'green' if g else '**RED**'} | {s:.0f} |" for k, g, s in baseline)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Planted bugs: caught by the module's own test file?\n\n"
            f"`benchmarks/planted_bugs.py`, {time.strftime('%Y-%m-%d %H:%M')}, python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs. One mutation at a time in a scratch copy of the repository (git ls-files), "
            "pytest run from the copy with PYTHONPATH=<copy>/src (checked: the copy's gatedrnn is imported), "
            "GATEDRNN_NO_KERNELS unset, `-x` (stops at the first failure). Caught = pytest exits with failures.\n\n"
            "Baseline (unmutated copy, same selections): must be green.\n\n"
            "| test selection | baseline | seconds |\n|---|---|---|\n" + base_lines + "\n\n" + table + "\n\n"
            + (f"All {len(rows)} planted bugs caught.\n" if ok else "NOT all planted bugs were caught (or the "
               "baseline was red).\n"))
        print(f"\nwrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
