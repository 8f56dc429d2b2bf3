"""What the study runs: the budgets, the learning-rate candidates, and one RunSpec per training run.

The protocol (Chung et al. 2014, "Training protocol" in docs/PAPER.md):
  1. search: for every (dataset, unit), train one model per learning-rate candidate (seed 0);
  2. select: the candidate with the lowest *validation* NLL (test NLL is never looked at);
  3. seeds:  re-run the selected configuration with seeds 0..N−1 (seed 0 IS the search run: same
     config, same run id, so it is reused, not retrained); every reported number is a mean over
     these seeds with a 95 % Student-t confidence interval.

Optional successive halving (`search="halving"`, docs/STUDY.md): every candidate starts; at each rung
(an epoch) the candidates still in the race are compared on the best validation NLL they reached up to
that epoch, and only the better ceil(n/eta) train on; after the last rung the survivor trains to the
end and is the selection. A halted run IS the full search's run (same config, same run id) paused at a
rung, so a full study continues it later instead of starting again. `halving_decide` is a pure function
of the runs' per-epoch histories: the driver and the agreement measurement (benchmarks/
halving_agreement.py, which replays a finished full search) make the same decisions.

A run's id is a stable hash of its TrainConfig (minus where the data lives and which device runs
it), so the same run in two invocations, two budgets or two machines has one run directory.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# (the config and the unit names are torch-free: a study knows runs, not tensors)
from ..config import NOT_COMPUTED, TrainConfig
from ..status import FINISHED, RunStatus
from ..units import PAPER_UNITS, canonical_unit, unit_family, unit_names
from ..utils import fields_with, role

UNITS = PAPER_UNITS   # a study's default; every name of gatedrnn.units.unit_names() is accepted, and
# package.module:ClassName (a unit of one's own: imported only where a command line names it, nn/imported.py)
MUSIC = ("jsb", "nottingham", "musedata", "piano")
# `reproduce --ablation FAMILY`: the full unit and every component ablation of it (docs/VARIANTS.md),
# trained under one protocol with an equal tuning budget each
ABLATIONS = {family: [n for n in unit_names() if n == family or unit_family(n) == family and n != "tanh"]
             for family in ("lstm", "gru")}
SPEECH = ("fsdd-a", "fsdd-b")
# The fields of TrainConfig that do not change what a run computes (config.NOT_COMPUTED: where the data lives,
# which device runs it, how often the training split's learning curve is recorded; TrainConfig's roles say
# which): left out of the run id, so a halving study's halted run is the full search's run paused.
NOT_IN_ID = NOT_COMPUTED
# The TrainConfig fields a study may set for all its runs (flags of `gatedrnn reproduce`): all but those it
# sets on each run itself (the grid's axes, its data folder: role "per_run") and the architecture, which the
# study keeps at the paper's (the units at Table 1's matched sizes).
NOT_SHARED = fields_with(TrainConfig, "per_run", "architecture")
TRAIN_FIELDS = tuple(f for f in TrainConfig.model_fields if f not in NOT_SHARED)
# The exponent range of the log-uniform learning-rate draw unless a study says otherwise (StudyConfig's
# default, lr_candidates'; the command line's help reads it from StudyConfig)
LR_RANGE = (-12.0, -6.0)

LOG_BASES = {"e": math.e, "2": 2.0, "10": 10.0}
# Successive halving: default rungs as fractions of a run's epochs (500 epochs: 150, 300). Chosen on the
# full paper-budget searches of JSB and Nottingham, replayed (benchmarks/results/halving_agreement.md):
# rungs at 10/20/40 % (50, 100, 200) kept the full search's rate in 3 of 6 cells (Nottingham's gated units
# and tanh overtake late: +0.25 test NLL at worst); 30/60 % kept it in 6 of 6 at 0.55x the search epochs.
HALVING_FRACTIONS = (0.3, 0.6)
# A halving study evaluates the training split after every 10th epoch (TrainConfig.eval_train_every; the
# validation split, which the rungs and early stopping read, after every epoch): a fifth of each epoch's
# cost, which the search does not use (benchmarks/results/study_cost-*.md). --eval-train-every 1 restores it.
HALVING_EVAL_TRAIN_EVERY = 10
# StudyConfig fields of the halving search: part of StudyConfig.key() only for search="halving", so the
# key of every full-search study (all studies made before halving existed) is unchanged.
SEARCH_FIELDS = ("search", "halving_rungs", "halving_fractions", "halving_eta")
# The size axis (issue 20): budgets of the `size` preset, recurrent parameters (Table 1's convention)
# (matched as Table 1 matches, at the nominal input size, 20,000 gives the paper's own sizes: 100 / 46 / 36)
SIZE_BUDGETS = (5_000, 20_000, 80_000, 320_000)

# ----------------------------------------------------------------------------------- budgets
# Each preset is a complete StudyConfig minus data_dir; CLI flags override single fields.
BUDGETS: dict[str, dict] = {
    # seconds to a couple of minutes on 2 cores: tiny slices, 2 epochs, 2 candidates, 2 seeds
    "smoke": dict(datasets=["jsb", "fsdd-a"], lr_candidates=2, lr_draw="stratified", seeds=2,
                  train=dict(epochs=2, patience=2, batch_size=4, limit_sequences=8, crop_length=32)),
    # The README's first command (make reproduce): quick's protocol on JSB Chorales — 6 stratified candidates
    # over 2^-10..2^-5 with edge extension, <= 250 epochs with patience 10 (its search runs ARE results/quick's
    # JSB runs: same configs, same run ids), reported by 3 fresh seeds. Its runs converge (stop by patience)
    # and its answer is the full study's (gated units tied, tanh behind); a few minutes on 2 cores. Until
    # 2026-12-03 it was 3 candidates and a 25-epoch cap, where every run hit the cap and the LSTM looked 0.7
    # nats worse than the GRU, "significantly" — an answer the full study contradicts.
    "laptop": dict(datasets=["jsb"], lr_candidates=6, lr_draw="stratified", lr_low=-10.0, lr_high=-5.0, seeds=3,
                   report_seeds="fresh", lr_extend=2, train=dict(epochs=250, patience=10)),
    # The four music sets in ~2 h on 2 cores (speech: budget "speech"). Designed by replaying the paper
    # budget's histories (docs/STUDY.md): 6 stratified candidates over 2^-10..2^-5 (every paper-budget
    # selection lies inside), 3 seeds, <= 250 epochs with patience 10 (the replay: ~92 % of runs stop by
    # patience, ~3.2 core-hours). Its old definition (4 candidates, 40 epochs) hit the cap in every
    # Nottingham run and selected the largest candidate everywhere.
    # Its top was 2^-6 until the LSTM took the largest candidate on MuseData and Piano-midi (commit
    # 56fd9fd, results in git history): the range now reaches 2^-5.
    "quick": dict(datasets=[*MUSIC], lr_candidates=6, lr_draw="stratified", lr_low=-10.0, lr_high=-5.0, seeds=3,
                  lr_extend=2, train=dict(epochs=250, patience=10)),
    # Speech at the largest budget that fits a few core-hours on a CPU (docs/STUDY.md): fsdd-a whole
    # (5,784 training sequences of 48 steps, ~15 s per epoch with evaluation), fsdd-b on 320 of its 640
    # training sequences (798 steps) spread over the split so every speaker is in it, valid and test
    # whole; 5 stratified candidates in 2^-13..2^-6 (tanh-400 wants small rates: on fsdd-a its validation
    # NLL was 2.23 / 3.69 / 6.55 / 14.3 at 8.5e-4 / 1.5e-3 / 2.9e-3 / 6.7e-3 in a first try over
    # 2^-11..2^-6), 3 fresh seeds (1..3; the selecting seed-0 run is shown beside them), patience 5 and the
    # paper's 500-epoch cap, which no run needs: at the 30-epoch cap of its first definitions 31 of 42 runs
    # ended at the cap; trained on, the selected configurations stop by patience at epochs 22-82
    # (results/speech-epochs-probe). Successive halving at epochs 10 and 20 (η 2: 5 -> 3 -> 2 finalists, who
    # train to convergence): replayed on the 30-epoch full search's histories it picks the same rate in 6 of
    # 6 cells at 0.73x its epochs, while a full search to convergence would carry the small-rate candidates
    # for hundreds of epochs (docs/STUDY.md, "speech at convergence"). fsdd-b with
    # truncated back-propagation (100 steps) for every unit: under the paper's weight noise the float32
    # gradient of tanh-400 overflows at the first update through the full 798 steps (every update, so
    # skipping non-finite updates cannot help); the strict outcome: `--datasets fsdd-b --tbptt 0`.
    # Its first definition (3 candidates in 2^-10..2^-6; the FIRST 1,200 fsdd-a / 150 fsdd-b training
    # sequences) trained on one or two speakers (FSDD's splits are stored speaker by speaker) and was
    # tested on all six: superseded (its runs: git history, commit e71d18a).
    "speech": dict(datasets=[*SPEECH], lr_candidates=5, lr_draw="stratified", lr_low=-13.0, seeds=3,
                   report_seeds="fresh", search="halving", halving_rungs=[10, 20],
                   train=dict(epochs=500, patience=5),
                   per_dataset={"fsdd-b": dict(limit_sequences=320, subset="spread", tbptt=100)}),
    # The component ablation (issue 11): every variant of both gated units on JSB and Nottingham, an equal
    # tuning budget each: 4 stratified candidates over 2^-9..2^-6 (every paper-budget selection of the full
    # units, 2.3e-3..1.1e-2, lies inside), 3 seeds, <= 250 epochs with patience 10 (quick's stopping rule)
    "ablation": dict(datasets=["jsb", "nottingham"], units=[*ABLATIONS["lstm"], *ABLATIONS["gru"]],
                     lr_candidates=4, lr_draw="stratified", lr_low=-9.0, seeds=3,
                     train=dict(epochs=250, patience=10)),
    # the full protocol: 10 candidates, 500 epochs with early stopping (patience 20), 5 seeds other than
    # the selecting run's (report_seeds "fresh": seeds 1..5; the selecting seed-0 run is shown beside them)
    "paper": dict(datasets=[*MUSIC, *SPEECH], lr_candidates=10, seeds=5, report_seeds="fresh",
                  train=dict(epochs=500, patience=20)),
    # The paper's protocol as the authors' released configuration keeps it (issue 19): every run trains
    # all 500 epochs and keeps its best-validation model (no early termination: patience 0), the rate
    # chosen by successive halving of the 10 candidates (rungs 150, 300; seed 0) and reported by seeds 1..5.
    "paper-faithful": dict(datasets=[*MUSIC], lr_candidates=10, seeds=5, report_seeds="fresh",
                           search="halving", train=dict(epochs=500, patience=0)),
    # Does the answer depend on the size? (issue 20; the paper tested ~20k parameters): paper-faithful's
    # protocol on JSB at four budgets, 5k to 320k recurrent parameters, for the paper's units and the minimal
    # ones, each (unit, budget) its own cell (search, selection, 3 fresh seeds). Cost: docs/STUDY.md.
    "size": dict(datasets=["jsb"], units=["tanh", "gru", "lstm", "mingru", "minlstm"],
                 param_budgets=list(SIZE_BUDGETS), lr_candidates=10, seeds=3, report_seeds="fresh",
                 search="halving", train=dict(epochs=500, patience=0)),
}


# The roles of StudyConfig's fields (utils.role): every other field is a flag of `gatedrnn reproduce`,
# generated from the field (cli/options.py), its default the budget's preset, else the field's.
STUDY_ROLES = {
    "no_flag": "not a flag of `gatedrnn reproduce`: the preset (--budget, its own flag), the TrainConfig "
               "fields (their own flags, TRAIN_FIELDS), or set only in a preset or from Python",
}


class StudyConfig(BaseModel):
    """Everything that defines a study (the grid and how each run is trained)."""
    model_config = ConfigDict(extra="forbid")

    budget: str = Field("custom", **role("no_flag"), description="the preset this study starts from (BUDGETS)")
    datasets: list[str] = Field(default_factory=lambda: [*MUSIC, *SPEECH],
                                description="datasets, comma-separated, e.g. jsb,nottingham")
    units: list[str] = Field(default_factory=lambda: list(UNITS),
                             description="comma-separated unit names: tanh, gru, lstm (the paper's), ablation "
                                         "variants, e.g. lstm,lstm-nig, mingru, minlstm (docs/VARIANTS.md), or "
                                         "package.module:ClassName, a torch.nn.Module of your own, e.g. "
                                         "torch.nn:GRU (docs/UNITS.md)")
    lr_candidates: int = Field(10, gt=0, description="learning rates drawn per (dataset, unit)")
    # one flag for both: --lr-range LOW HIGH
    lr_low: float = Field(LR_RANGE[0], allow_inf_nan=False, **role(flag="lr_range"),
                          description="exponent range of the log-uniform draw")
    lr_high: float = Field(LR_RANGE[1], allow_inf_nan=False, **role(flag="lr_range"),
                           description="exponent range of the log-uniform draw")
    lr_base: Literal["e", "2", "10"] = Field("2", description="log base of the draw: e, 2 or 10")
    lr_seed: int = Field(0, ge=0, description="seed of the learning-rate draws")
    lr_draw: Literal["random", "stratified"] = Field(
        "random", description="random: independent draws (the paper); stratified: one in each equal slice of "
                              "the range")
    seeds: int = Field(5, gt=0, description="seeds of the selected configuration")
    search_seed: int = Field(0, ge=0, **role("no_flag"), description="seed of the learning-rate search runs")
    # The run that selects a rate is the best of the candidates on validation, so its own numbers are
    # optimistic (results/paper: seed 0 had the best validation NLL of the five in 9 of 12 cells).
    # "fresh": the reported seeds are `seeds` others (search seed 0: seeds 1..N), the selecting run shown
    # beside their mean; "include-search": the search run is reported seed 0 (the studies before 2026-12-03).
    report_seeds: Literal["include-search", "fresh"] = Field(
        "include-search", description="fresh: report seeds other than the search seed (the selecting run is "
        "shown apart); include-search: the search run is one of the reported seeds")
    train: dict = Field(default_factory=dict, **role("no_flag"),
                        description="TrainConfig fields shared by every run")
    per_dataset: dict[str, dict] = Field(default_factory=dict, **role("no_flag"),
                                         description="TrainConfig fields for one dataset, over `train`")
    lr_extend: int = Field(0, ge=0, description="edge extension of a full search: while the selected rate is "
                           "the smallest (largest) candidate, add one drawn a stratum below (above) it, at most "
                           "this many per side; 0: the candidates as drawn (the paper)")
    search: Literal["full", "halving"] = Field(
        "full", description="full: every candidate trains to the end (the paper); halving: successive halving — "
                            "all candidates start, the worse by validation NLL stop at each rung, the survivor "
                            "trains to the end (docs/STUDY.md)")
    halving_rungs: list[int] | None = Field(
        None, description="epochs at which the worse candidates stop (none: halving_fractions of the epochs, "
                          f"{','.join(f'{f:.0%}' for f in HALVING_FRACTIONS)}: "
                          f"{','.join(str(round(f * 500)) for f in HALVING_FRACTIONS)} for 500)")
    halving_fractions: list[float] = Field(default_factory=lambda: list(HALVING_FRACTIONS), **role("no_flag"),
                                           description="rungs as fractions of each dataset's epochs")
    halving_eta: int = Field(2, ge=2, description="after a rung, the better ceil(n/eta) candidates go on")
    param_budgets: list[int] | None = Field(
        None, description="the size axis: each (dataset, unit) at each of these recurrent-parameter budgets, its "
        "own cell (hidden size matched to the budget, TrainConfig.budget; lr search, selection, seeds per cell), "
        "e.g. 5000,20000,80000,320000; none: Table 1's sizes, one cell per (dataset, unit)")
    data_dir: str | None = Field(None, description=TrainConfig.model_fields["data_dir"].description)

    @field_validator("units")
    @classmethod
    def _units(cls, v: list[str]) -> list[str]:
        # registered names in lower case, import paths as written (their form only: reading a study never
        # imports the code its files name)
        return [canonical_unit(u) for u in v]

    @field_validator("halving_rungs")
    @classmethod
    def _rungs(cls, v):
        if v is None:
            return v
        if not v or any(int(r) <= 0 for r in v):
            raise ValueError(f"halving rungs must be positive epochs, got {v}")
        return sorted({int(r) for r in v})

    @field_validator("halving_fractions")
    @classmethod
    def _fractions(cls, v):
        if not v or any(not 0 < f < 1 for f in v):
            raise ValueError(f"halving fractions must lie in (0, 1), got {v}")
        return sorted(set(float(f) for f in v))

    @field_validator("param_budgets", mode="before")
    @classmethod
    def _budgets(cls, v):
        if v is None:
            return v
        if not isinstance(v, (list, tuple)) or not v or any(
                isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in v):
            raise ValueError(f"parameter budgets must be positive whole numbers of parameters, got {v}")
        return sorted(set(v))

    @field_validator("train")
    @classmethod
    def _train_fields(cls, v: dict) -> dict:
        bad = sorted(set(v) - set(TRAIN_FIELDS))
        if bad:
            raise ValueError(f"not settable for a study: {bad}; allowed: {list(TRAIN_FIELDS)}")
        return v

    @field_validator("per_dataset")
    @classmethod
    def _per_dataset_fields(cls, v: dict) -> dict:
        for name, fields in v.items():
            bad = sorted(set(fields) - set(TRAIN_FIELDS))
            if bad:
                raise ValueError(f"per_dataset[{name!r}]: not settable for a study: {bad}")
        return v

    @model_validator(mode="after")
    def _extend_full_only(self):
        if self.lr_extend and self.search != "full":
            raise ValueError("lr_extend (edge extension) needs search='full': a halving search's candidates are "
                             "fixed when it starts")
        return self

    @model_validator(mode="after")
    def _halving_train_curve(self):
        if self.search == "halving" and "eval_train_every" not in self.train:
            self.train = {**self.train, "eval_train_every": HALVING_EVAL_TRAIN_EVERY}
        return self

    def train_fields(self, dataset: str) -> dict:
        """The TrainConfig fields of this study's runs on `dataset` (train, then per_dataset over it)."""
        from ..data import DataError, canonical_name
        out = dict(self.train)
        for name, fields in self.per_dataset.items():
            try:
                key = canonical_name(name)
            except DataError:
                key = name
            if key == dataset:
                out.update(fields)
        return {k: v for k, v in out.items() if v is not None}

    @field_validator("lr_high")
    @classmethod
    def _range(cls, v, info):
        low = info.data.get("lr_low")
        if low is not None and not v > low:
            raise ValueError(f"lr range must have low < high, got ({low}, {v})")
        return v

    def seed_list(self) -> list[int]:
        """Seeds of the selected configuration that the tables report: with report_seeds="include-search"
        the search seed first (its run is reused), with "fresh" `seeds` others."""
        rest = [s for s in range(self.seeds + 1) if s != self.search_seed]
        return rest[: self.seeds] if self.report_seeds == "fresh" else [self.search_seed, *rest][: self.seeds]

    def new_seed_runs(self) -> int:
        """Seed runs a cell trains after its search (the search run is one of the seeds or not)."""
        return len(self.seed_list()) - (self.search_seed in self.seed_list())

    def rungs(self, epochs: int) -> list[int]:
        """The halving rungs of runs of `epochs` epochs (only those before the end; [] for a full search)."""
        if self.search != "halving":
            return []
        rungs = self.halving_rungs if self.halving_rungs is not None else \
            sorted({max(1, int(f * epochs + 0.5)) for f in self.halving_fractions})
        return [r for r in rungs if r < epochs]

    def key(self) -> str:
        """Stable hash of what the study computes (data_dir excluded; the halving fields only for a
        halving search, so a full-search study keeps the key it had before they existed)."""
        d = self.model_dump(exclude={"data_dir"})
        if not d["lr_extend"]:
            d.pop("lr_extend")          # added 2026-12-02: the studies before it keep their keys
        if d["report_seeds"] == "include-search":
            d.pop("report_seeds")       # added 2026-12-03: likewise
        if d["search"] == "full":
            for k in SEARCH_FIELDS:
                d.pop(k)
        if d["param_budgets"] is None:
            d.pop("param_budgets")      # added 2026-12-03 (the size axis): the studies before it keep their keys
        d["train"] = {k: v for k, v in sorted(d["train"].items()) if k not in NOT_IN_ID}
        d["per_dataset"] = {n: {k: v for k, v in sorted(f.items()) if k not in NOT_IN_ID}
                            for n, f in sorted(d["per_dataset"].items())}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def budget_config(budget: str, **overrides) -> StudyConfig:
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    base = json.loads(json.dumps(BUDGETS[budget]))  # deep copy
    given = set(overrides.get("train") or {})
    train = {**base.pop("train", {}), **(overrides.pop("train", None) or {})}
    train = {k: v for k, v in train.items() if v is not None}  # None: back to TrainConfig's default
    # a flag given on the command line (in `train`) wins over the preset's per-dataset values
    if "per_dataset" in base:
        base["per_dataset"] = {n: {k: v for k, v in f.items() if k not in given}
                               for n, f in base["per_dataset"].items()}
    if overrides.get("search") == "halving" and overrides.get("lr_extend") is None:
        base.pop("lr_extend", None)     # a preset's edge extension is for its full search
    base.update({k: v for k, v in overrides.items() if v is not None})
    return StudyConfig(budget=budget, train=train, **base)


# ----------------------------------------------------------------------------- learning rates
def lr_candidates(n: int, low: float = LR_RANGE[0], high: float = LR_RANGE[1], base: str = "2", seed: int = 0,
                  draw: str = "random") -> list[float]:
    """n learning rates drawn log-uniformly: base ** U(low, high), seeded (numpy PCG64), rounded to 4
    significant digits (so run ids do not depend on the last bits of a float), sorted ascending.

    draw="random": n independent draws (the paper). draw="stratified": one draw in each of n equal
    slices of [low, high] (each draw is still log-uniform over its slice, and a uniformly chosen one is
    log-uniform over the range), so a small n cannot bunch up in one corner of the range."""
    if n <= 0:
        raise ValueError(f"need at least one learning-rate candidate, got {n}")
    if base not in LOG_BASES:
        raise ValueError(f"log base must be one of {list(LOG_BASES)}, got {base!r}")
    rng = np.random.default_rng(seed)
    if draw == "random":
        u = rng.uniform(low, high, size=n)
    elif draw == "stratified":
        u = low + (np.arange(n) + rng.uniform(0, 1, size=n)) * (high - low) / n
    else:
        raise ValueError(f"draw must be 'random' or 'stratified', got {draw!r}")
    return sorted(float(f"{LOG_BASES[base] ** x:.4g}") for x in u)


def extension_lr(study: "StudyConfig", side: str, k: int) -> float:
    """The k-th (1, 2, ...) edge-extension candidate below ("low") or above ("high") the drawn range: one
    draw, log-uniform over the k-th stratum beyond that edge (a stratum = (high - low) / lr_candidates, the
    stratified draw's slice), seeded by (lr_seed, side, k) and rounded like the drawn candidates."""
    w = (study.lr_high - study.lr_low) / study.lr_candidates
    u = np.random.default_rng([study.lr_seed, {"low": 1, "high": 2}[side], k]).uniform()
    x = study.lr_low - k * w + u * w if side == "low" else study.lr_high + (k - 1) * w + u * w
    return float(f"{LOG_BASES[study.lr_base] ** x:.4g}")


# ------------------------------------------------------------------------------------ datasets
def available_datasets(names) -> tuple[list[str], list[str]]:
    """(canonical names, notes). Every built-in dataset module is part of the package (gatedrnn.data
    registers them all), so a name the registry does not know is a mistake, never a module still to come:
    it raises DataError naming it and the valid names, before any run starts. A name given twice (also
    through an alias) is kept once, with a note."""
    from ..data import DataError, canonical_name
    ok, notes = [], []
    for name in names:
        try:
            key = canonical_name(name)
        except DataError as e:
            raise DataError(f"study datasets: {e}") from None
        if key in ok:
            notes.append(f"{name}: the same dataset as {key}, given twice; trained once")
            continue
        ok.append(key)
    return ok, notes


# ------------------------------------------------------------------------------------ run specs
# TrainConfig fields added after studies had run: left out of the hash while at their default, so the
# run ids (and finished runs) of earlier studies stay valid.
ID_DEFAULTS = {"skip_nonfinite": 0, "tbptt": None, "subset": "first"}


def run_id_of(config: dict) -> str:
    """'<dataset>-<unit>-lr<lr>-s<seed>-<hash>': a readable prefix and a stable hash of the config."""
    d = {k: v for k, v in config.items()
         if k not in NOT_IN_ID and not (k in ID_DEFAULTS and v == ID_DEFAULTS[k])}
    h = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]
    # a folder name: user datasets ('midi:/a/b?step=0.25') keep only safe characters (built-in names have none else)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(config["dataset"])).strip("_")
    unit = re.sub(r"[^A-Za-z0-9._-]+", "_", str(config["unit"]))     # 'torch.nn:GRU' -> 'torch.nn_GRU'
    return f"{name}-{unit}-lr{config['lr']:.4g}-s{config['seed']}-{h}"


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    dataset: str
    unit: str
    lr: float
    seed: int
    config: dict = field(hash=False, compare=False)  # TrainConfig fields (complete, validated)

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "dataset": self.dataset, "unit": self.unit, "lr": self.lr,
                "seed": self.seed, "config": self.config}


def make_spec(study: StudyConfig, dataset: str, unit: str, lr: float, seed: int,
              budget: int | None = None) -> RunSpec:
    """One run; `budget` (the size axis) sets TrainConfig.budget, so the run's hidden size is matched to
    that many recurrent parameters by Table 1's convention (nominal input size). None: Table 1's size (the field stays at its
    default, so the config and the run id are those of a study without the axis)."""
    size = {} if budget is None else {"budget": int(budget)}
    cfg = TrainConfig(dataset=dataset, unit=unit, lr=lr, seed=seed, data_dir=study.data_dir,
                      **size, **study.train_fields(dataset)).model_dump()
    return RunSpec(run_id_of(cfg), cfg["dataset"], unit, float(lr), int(seed), cfg)


def cell_label(dataset: str, unit: str, budget: int | None = None) -> str:
    """'jsb/gru', or with the size axis 'jsb/gru@20000' (logs, the store's halving record, summaries)."""
    return f"{dataset}/{unit}" if budget is None else f"{dataset}/{unit}@{budget}"


class Grid:
    """The study's runs: search runs now, seed runs once the search of a (dataset, unit) is done."""

    def __init__(self, study: StudyConfig, datasets: list[str] | None = None):
        self.study = study
        if datasets is None:
            datasets, self.notes = available_datasets(study.datasets)
        else:
            self.notes = []
        self.datasets = datasets
        self.units = list(study.units)
        self.lrs = lr_candidates(study.lr_candidates, study.lr_low, study.lr_high, study.lr_base, study.lr_seed,
                                study.lr_draw)
        # the size axis: [None] without it (Table 1's sizes, one cell per (dataset, unit))
        self.budgets: list[int | None] = list(study.param_budgets) if study.param_budgets else [None]
        self._drawn: dict[tuple[str, str, int | None], list[RunSpec]] = {}

    @property
    def sized(self) -> bool:
        """Whether the study has the size axis (cells per budget)."""
        return self.budgets != [None]

    def cells(self) -> list[tuple[str, str]]:
        """(dataset, unit) pairs, each once (with the size axis a pair has one cell per budget: sized_cells)."""
        return [(d, u) for d in self.datasets for u in self.units]

    def sized_cells(self) -> list[tuple[str, str, int | None]]:
        """Every cell the study selects and reports: (dataset, unit, budget), by dataset, then budget, then
        unit; budget None without the size axis."""
        return [(d, u, b) for d in self.datasets for b in self.budgets for u in self.units]

    def search_specs(self, dataset: str, unit: str, rows: dict[str, dict] | None = None,
                     budget: int | None = None) -> list[RunSpec]:
        """The cell's search runs, by learning rate. With edge extension (study.lr_extend) the candidates
        depend on the outcomes so far (`rows`: results by run id): while every candidate has ended and
        the selection is the smallest (largest) one, one more is added beyond that edge (extension_lr),
        at most lr_extend per side — a pure function of the rows, as halving's decisions are."""
        key = (dataset, unit, budget)
        if key not in self._drawn:      # made once: the runner asks at every poll
            self._drawn[key] = [make_spec(self.study, dataset, unit, lr, self.study.search_seed, budget)
                                for lr in self.lrs]
        specs = self._drawn[key]
        if not self.study.lr_extend or rows is None:
            return list(specs)
        added = {"low": 0, "high": 0}
        while True:
            got = [rows.get(s.run_id) for s in specs]
            if not all(r is not None and r.get("status") in ENDED for r in got):
                return specs
            chosen = select_lr([{**r, "lr": s.lr} for r, s in zip(got, specs)])
            if chosen is None:
                return specs
            side = "low" if chosen["lr"] == specs[0].lr else "high" if chosen["lr"] == specs[-1].lr else None
            if side is None or added[side] >= self.study.lr_extend:
                return specs
            added[side] += 1
            lr = extension_lr(self.study, side, added[side])
            specs = sorted([*specs, make_spec(self.study, dataset, unit, lr, self.study.search_seed, budget)],
                           key=lambda s: s.lr)

    def seed_specs(self, dataset: str, unit: str, lr: float, budget: int | None = None) -> list[RunSpec]:
        return [make_spec(self.study, dataset, unit, lr, s, budget) for s in self.study.seed_list()]

    def rungs(self, dataset: str) -> list[int]:
        """Halving rungs of this dataset's runs ([] for a full search)."""
        return self.study.rungs(int(self.search_specs(dataset, self.units[0])[0].config["epochs"]))

    def search_outcome(self, dataset: str, unit: str, rows: dict[str, dict],
                       budget: int | None = None) -> tuple[bool, dict | None]:
        """(search finished, selected search row or None) of one cell from the store rows by run id,
        for either search (full: every candidate finished, lowest validation NLL; halving: the survivor)."""
        specs = self.search_specs(dataset, unit, rows, budget)
        return search_outcome(self.study, [rows.get(s.run_id) for s in specs], [s.lr for s in specs],
                              int(specs[0].config["epochs"]))

    def n_runs(self) -> int:
        """Distinct runs of the whole study (seed 0 of the selected lr is a search run)."""
        return len(self.sized_cells()) * (len(self.lrs) + self.study.new_seed_runs())


# ------------------------------------------------------------------------------------ selection
# A run that ended with a usable model (a diverged run is finished but not averaged; a failed one has no model).
OK_STATUSES = (RunStatus.COMPLETED, RunStatus.EARLY_STOPPED)
# A run that will not train again (finished, or failed: retried only by a later invocation).
ENDED = (*FINISHED, RunStatus.FAILED)


def select_lr(search_results: list[dict]) -> dict | None:
    """The search result with the lowest VALIDATION NLL among runs that did not diverge or fail.

    Only `valid_nll` is read (test NLL must never inform a choice). Ties: the smaller learning rate.
    Returns None when no candidate produced a finite validation NLL."""
    ok = [r for r in search_results
          if r.get("status") in OK_STATUSES and r.get("valid_nll") is not None
          and math.isfinite(float(r["valid_nll"]))]
    if not ok:
        return None
    return min(ok, key=lambda r: (float(r["valid_nll"]), float(r["lr"])))


# ---------------------------------------------------------------------------- successive halving

def rung_score(history: list[dict], rung: int) -> float:
    """A candidate's score at a rung: the best validation NLL over epochs 0..rung of its history (what
    train() calls best_valid when paused there); inf when it diverged by then (diverged = worst)."""
    best = math.inf
    for r in history or []:
        if int(r.get("epoch", 0)) > rung:
            break
        v = r.get("valid_nll")
        if r.get("diverged") or v is None or not math.isfinite(float(v)):
            return math.inf
        best = min(best, float(v))
    return best


def reached(row: dict | None, stop_after: int | None) -> bool:
    """Whether a run's store row already covers a need: trained through epoch `stop_after` (None: to the
    end). Finished runs (completed, early-stopped, diverged, failed) cover every need."""
    if row is None:
        return False
    if row.get("status") in ENDED:
        return True
    return (stop_after is not None and row.get("status") == RunStatus.HALTED
            and int(row.get("epochs") or 0) >= stop_after)


def halving_decide(rows: list[dict | None], lrs: list[float], rungs: list[int], eta: int = 2) -> dict:
    """Successive halving over one (dataset, unit)'s candidates, from what is known so far.

    rows[i]: the latest store row of candidate lrs[i] (status, epochs, history, valid_nll) or None (not
    started). Walks the rungs from the first: while every candidate still in the race has reached the
    rung, ranks them by rung_score (ties: the smaller lr) and keeps the better ceil(n/eta); stops at the
    first rung (or the end) that some candidate has not reached yet and returns what must run:

      {"need": [(i, stop_after | None)], "done": bool, "selected": row | None, "trace": [...],
       "trained_to": {i: furthest stop_after requested, None = to the end}}

    After the last rung (or as soon as one candidate is left) the survivors train to the end and the
    selection is select_lr over them (validation NLL of the best model). If none of them gives a finite
    validation NLL (all diverged or failed after the last rung), the next-ranked candidate of the last
    rung is trained to the end, and so on. Deterministic: the same histories give the same decisions,
    however far each run has been trained beyond a rung (only epochs <= rung are read)."""
    n = len(lrs)
    alive = list(range(n))
    trace: list[dict] = []
    trained_to: dict[int, int | None] = {}
    ranking = list(range(n))
    for rung in rungs:
        if len(alive) <= 1:
            break
        for i in alive:
            trained_to[i] = rung
        missing = [i for i in alive if not reached(rows[i], rung)]
        if missing:
            return {"need": [(i, rung) for i in missing], "done": False, "selected": None, "trace": trace,
                    "trained_to": trained_to}
        scores = {i: rung_score((rows[i] or {}).get("history") or [], rung) for i in alive}
        ranking = sorted(alive, key=lambda i: (scores[i], lrs[i]))
        keep = ranking[:math.ceil(len(alive) / eta)]
        trace.append({"rung": rung, "scores": {lrs[i]: scores[i] for i in ranking},
                      "kept": sorted(lrs[i] for i in keep), "cut": sorted(lrs[i] for i in alive if i not in keep)})
        alive = sorted(keep)
    final = sorted(alive, key=lambda i: ranking.index(i))
    rest = [i for i in ranking if i not in final]
    while True:
        for i in final:
            trained_to[i] = None
        missing = sorted(i for i in final if not reached(rows[i], None))
        if missing:
            return {"need": [(i, None) for i in missing], "done": False, "selected": None, "trace": trace,
                    "trained_to": trained_to}
        chosen = select_lr([{**rows[i], "lr": lrs[i]} for i in final])
        if chosen is not None or not rest:
            return {"need": [], "done": True, "selected": chosen, "trace": trace, "trained_to": trained_to,
                    "finalists": sorted(lrs[i] for i in final)}
        final.append(rest.pop(0))   # every survivor diverged after the last rung: the next in line


def search_outcome(study: StudyConfig, rows: list[dict | None], lrs: list[float], epochs: int) -> tuple[bool, dict | None]:
    """(search finished, selected search row or None) of one (dataset, unit), from its search runs' store
    rows — for either search. The tables call this, so a halving study's selection is the driver's."""
    rungs = study.rungs(epochs)
    if study.search == "halving":
        d = halving_decide(rows, lrs, rungs, study.halving_eta)
        return d["done"], d["selected"]
    complete = all(r is not None and r.get("status") in ENDED for r in rows)
    return complete, (select_lr([{**r, "lr": lr} for r, lr in zip(rows, lrs)]) if complete else None)
