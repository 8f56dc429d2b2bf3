"""What the study runs: the budgets, the learning-rate candidates, and one RunSpec per training run.

The protocol (Chung et al. 2014, "Training protocol" in docs/PAPER.md):
  1. search: for every (dataset, unit), train one model per learning-rate candidate (seed 0);
  2. select: the candidate with the lowest *validation* NLL (test NLL is never looked at);
  3. seeds:  re-run the selected configuration with seeds 0..N−1 (seed 0 IS the search run: same
     config, same run id, so it is reused, not retrained); every reported number is a mean over
     these seeds with a 95 % Student-t confidence interval.

A run's id is a stable hash of its TrainConfig (minus where the data lives and which device runs
it), so the same run in two invocations, two budgets or two machines has one run directory.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

UNITS = ("tanh", "gru", "lstm")
MUSIC = ("jsb", "nottingham", "musedata", "piano")
SPEECH = ("fsdd-a", "fsdd-b")
# Fields of TrainConfig that do not change what a run computes: left out of the run id.
NOT_IN_ID = ("data_dir", "device")
# The TrainConfig fields a study may set for all its runs (flags of `gatedrnn reproduce`).
TRAIN_FIELDS = ("epochs", "patience", "batch_size", "eval_batch_size", "limit_sequences", "crop_length",
                "optimizer", "weight_noise", "clip_norm", "lr_final", "lr_decay_epochs", "width", "device")

LOG_BASES = {"e": math.e, "2": 2.0, "10": 10.0}

# ----------------------------------------------------------------------------------- budgets
# Each preset is a complete StudyConfig minus data_dir; CLI flags override single fields.
BUDGETS: dict[str, dict] = {
    # seconds to a couple of minutes on 2 cores: tiny slices, 2 epochs, 2 candidates, 2 seeds
    "smoke": dict(datasets=["jsb", "fsdd-a"], lr_candidates=2, lr_draw="stratified", seeds=2,
                  train=dict(epochs=2, patience=2, batch_size=4, limit_sequences=8, crop_length=32)),
    # the README's first command (make reproduce): JSB Chorales only, 3 stratified candidates, 3 seeds,
    # 25 epochs — a minute or two on a laptop; says nothing final, shows every output
    "laptop": dict(datasets=["jsb"], lr_candidates=3, lr_draw="stratified", lr_low=-10.0, seeds=3,
                   train=dict(epochs=25, patience=10)),
    # all datasets, 4 stratified candidates in the upper part of the range (where the 40-epoch optimum
    # was measured, docs/STUDY.md), 40 epochs (patience 10), 5 seeds
    # speech epochs cost ~1 min each on full FSDD with 1 thread: fewer epochs on a slice (first N sequences)
    "quick": dict(datasets=[*MUSIC, *SPEECH], lr_candidates=4, lr_draw="stratified", lr_low=-10.0, seeds=5,
                  train=dict(epochs=40, patience=10),
                  per_dataset={"fsdd-a": dict(epochs=10, patience=5, limit_sequences=1200),
                               "fsdd-b": dict(epochs=10, patience=5, limit_sequences=150)}),
    # the full protocol: 10 candidates, 500 epochs with early stopping (patience 20), 5 seeds
    "paper": dict(datasets=[*MUSIC, *SPEECH], lr_candidates=10, seeds=5,
                  train=dict(epochs=500, patience=20)),
}


class StudyConfig(BaseModel):
    """Everything that defines a study (the grid and how each run is trained)."""
    model_config = ConfigDict(extra="forbid")

    budget: str = "custom"
    datasets: list[str] = Field(default_factory=lambda: [*MUSIC, *SPEECH])
    units: list[Literal["tanh", "gru", "lstm"]] = Field(default_factory=lambda: list(UNITS))
    lr_candidates: int = Field(10, gt=0, description="learning rates drawn per (dataset, unit)")
    lr_low: float = -12.0
    lr_high: float = -6.0
    lr_base: Literal["e", "2", "10"] = "2"
    lr_seed: int = Field(0, ge=0, description="seed of the learning-rate draws")
    lr_draw: Literal["random", "stratified"] = "random"
    seeds: int = Field(5, gt=0, description="seeds of the selected configuration")
    search_seed: int = Field(0, ge=0, description="seed of the learning-rate search runs")
    train: dict = Field(default_factory=dict, description="TrainConfig fields shared by every run")
    per_dataset: dict[str, dict] = Field(default_factory=dict,
                                         description="TrainConfig fields for one dataset, over `train`")
    data_dir: str | None = None

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
        """Seeds of the selected configuration; the search seed first (its run is reused)."""
        rest = [s for s in range(self.seeds + 1) if s != self.search_seed]
        return [self.search_seed, *rest][: self.seeds]

    def key(self) -> str:
        """Stable hash of what the study computes (data_dir excluded)."""
        d = self.model_dump(exclude={"data_dir"})
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
    base.update({k: v for k, v in overrides.items() if v is not None})
    return StudyConfig(budget=budget, train=train, **base)


# ----------------------------------------------------------------------------- learning rates
def lr_candidates(n: int, low: float = -12.0, high: float = -6.0, base: str = "2", seed: int = 0,
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


# ------------------------------------------------------------------------------------ datasets
def available_datasets(names) -> tuple[list[str], list[str]]:
    """(canonical names that the data registry knows, notes for the ones skipped)."""
    from ..data import DataError, canonical_name
    ok, notes = [], []
    for name in names:
        try:
            key = canonical_name(name)
        except DataError:
            notes.append(f"{name}: not registered in gatedrnn.data (module not installed yet?); skipped")
            continue
        if key not in ok:
            ok.append(key)
    return ok, notes


# ------------------------------------------------------------------------------------ run specs
# TrainConfig fields added after studies had run: left out of the hash while at their default, so the
# run ids (and finished runs) of earlier studies stay valid.
ID_DEFAULTS = {"skip_nonfinite": 0}


def run_id_of(config: dict) -> str:
    """'<dataset>-<unit>-lr<lr>-s<seed>-<hash>': a readable prefix and a stable hash of the config."""
    d = {k: v for k, v in config.items()
         if k not in NOT_IN_ID and not (k in ID_DEFAULTS and v == ID_DEFAULTS[k])}
    h = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{config['dataset']}-{config['unit']}-lr{config['lr']:.4g}-s{config['seed']}-{h}"


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


def make_spec(study: StudyConfig, dataset: str, unit: str, lr: float, seed: int) -> RunSpec:
    from ..train import TrainConfig
    cfg = TrainConfig(dataset=dataset, unit=unit, lr=lr, seed=seed, data_dir=study.data_dir,
                      **study.train_fields(dataset)).model_dump()
    return RunSpec(run_id_of(cfg), cfg["dataset"], unit, float(lr), int(seed), cfg)


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

    def cells(self) -> list[tuple[str, str]]:
        return [(d, u) for d in self.datasets for u in self.units]

    def search_specs(self, dataset: str, unit: str) -> list[RunSpec]:
        return [make_spec(self.study, dataset, unit, lr, self.study.search_seed) for lr in self.lrs]

    def seed_specs(self, dataset: str, unit: str, lr: float) -> list[RunSpec]:
        return [make_spec(self.study, dataset, unit, lr, s) for s in self.study.seed_list()]

    def n_runs(self) -> int:
        """Distinct runs of the whole study (seed 0 of the selected lr is a search run)."""
        return len(self.cells()) * (len(self.lrs) + len(self.study.seed_list()) - 1)


# ------------------------------------------------------------------------------------ selection
OK_STATUSES = ("completed", "early_stopped")


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
