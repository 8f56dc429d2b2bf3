"""Trivial reference models, fitted on the train split and scored on the same splits (same
limit_sequences / crop_length) and in the same unit as the networks: nats per step, summed over the
outputs of a step, averaged over every step of a split.

Music (binary piano rolls, target frame y_t predicted from the previous frame x_t = y_{t−1}):
  marginal   independent Bernoulli per pitch with its train frequency (add-one smoothing); no context
  repeat     "repeat the previous frame", smoothed: p(note on) = 1 − ε if it was on in the previous
             frame, else ε'; ε = P(off | on before) and ε' = P(on | off before) fitted on train
             transitions (add-one smoothing), shared by all pitches
Speech (real-valued targets):
  gaussian   one diagonal Gaussian per target sample position, mean/variance fitted on train
"""
from __future__ import annotations

import math

import numpy as np


def _stack(pairs):
    x = np.concatenate([np.asarray(a, dtype=np.float64) for a, _ in pairs]) if pairs else np.zeros((0, 0))
    y = np.concatenate([np.asarray(b, dtype=np.float64) for _, b in pairs]) if pairs else np.zeros((0, 0))
    return x, y


def _bernoulli_nll(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over frames of −Σ_notes [y log p + (1−y) log(1−p)]."""
    if len(y) == 0:
        return math.nan
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).sum(1).mean())


def marginal_fit(train_pairs, alpha: float = 1.0) -> np.ndarray:
    _, y = _stack(train_pairs)
    return (y.sum(0) + alpha) / (len(y) + 2 * alpha)


def repeat_fit(train_pairs, alpha: float = 1.0) -> tuple[float, float]:
    """(ε, ε') from train transitions: ε = P(off now | on before), ε' = P(on now | off before)."""
    x, y = _stack(train_pairs)
    on_before = x > 0.5
    eps = ((y < 0.5) & on_before).sum() + alpha
    eps /= on_before.sum() + 2 * alpha
    eps2 = ((y > 0.5) & ~on_before).sum() + alpha
    eps2 /= (~on_before).sum() + 2 * alpha
    return float(eps), float(eps2)


def music_baselines(splits: dict) -> dict[str, dict[str, float]]:
    """{"marginal": {split: nll}, "repeat": {split: nll}} plus fitted parameters under "_params"."""
    p = marginal_fit(splits["train"])
    eps, eps2 = repeat_fit(splits["train"])
    out = {"marginal": {}, "repeat": {}}
    for split, pairs in splits.items():
        x, y = _stack(pairs)
        out["marginal"][split] = _bernoulli_nll(y, np.broadcast_to(p, y.shape))
        out["repeat"][split] = _bernoulli_nll(y, np.where(x > 0.5, 1 - eps, eps2))
    out["_params"] = {"repeat_eps_off": eps, "repeat_eps_on": eps2}
    return out


def speech_baselines(splits: dict) -> dict[str, dict[str, float]]:
    _, y = _stack(splits["train"])
    mu, var = y.mean(0), y.var(0) + 1e-8
    out = {"gaussian": {}}
    for split, pairs in splits.items():
        _, t = _stack(pairs)
        if len(t) == 0:
            out["gaussian"][split] = math.nan
            continue
        nll = 0.5 * (np.log(2 * math.pi * var) + (t - mu) ** 2 / var)
        out["gaussian"][split] = float(nll.sum(1).mean())
    return out


BASELINE_NAMES = {
    "marginal": "per-note marginal frequencies (no context)",
    "repeat": "repeat the previous frame (smoothed)",
    "gaussian": "one Gaussian per sample (no context)",
}


def dataset_baselines(train_fields: dict, dataset: str, data_dir=None) -> dict:
    """Baselines of a dataset prepared exactly as the study's runs see it."""
    from ..train import TrainConfig, prepare_data
    fields = {k: v for k, v in train_fields.items() if k in ("limit_sequences", "crop_length", "width")}
    cfg = TrainConfig(dataset=dataset, data_dir=data_dir, **fields)
    ds = prepare_data(cfg)
    res = music_baselines(ds.splits) if ds.kind == "music" else speech_baselines(ds.splits)
    res["_kind"] = ds.kind
    return res
