"""Why lstm-noaf (h_t = o_t ⊙ c_t, no output tanh) diverged at every learning rate on Nottingham but not on JSB.

    GATEDRNN_DATA_DIR=/work/shared/data python benchmarks/noaf_divergence.py [--updates 150]

Replays the first updates of the ablation study's seed-0 runs (its smallest learning-rate candidate,
0.00272, and 10x smaller than any candidate; weight noise 0.075 as the protocol, and 0) with train.py's
own pieces: the run's batch order (iterate_batches, seed 0, epochs 1, 2, ...), forward_backward, clipping to norm 1, the
optimiser. Per update it records the gradient norm BEFORE clipping (float32, as training computes it)
and the largest |h_t| the current weights reach on the batch without noise. Written to
results/ablation/noaf_divergence.md (+ .json).

Without the output tanh, h_t = o_t ⊙ c_t is bounded only by |c_t| ≤ Σ_s |i_s| ≤ t, and h_t feeds every
gate and the candidate through U: the Jacobian ∂c_t/∂c_{t−1} gains terms proportional to c_{t−1} (the
gates' derivative times U times o), so on long sequences the product over time grows geometrically, and
the float32 gradient overflows before the clipping can rescale it.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from gatedrnn.data.batching import iterate_batches
from gatedrnn.nn.bench import machine_info
from gatedrnn.train import TrainConfig, build_model, forward_backward, make_optimizer, model_spec, prepare_data

REPO = Path(__file__).resolve().parents[1]


def replay(dataset: str, unit: str, lr: float, noise: float, updates: int) -> dict:
    cfg = TrainConfig(dataset=dataset, unit=unit, lr=lr, weight_noise=noise, seed=0)
    ds = prepare_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(model_spec(cfg, ds), cfg.weight_noise)
    opt = make_optimizer(cfg, model.parameters())
    norms, hmax, lengths, first_bad = [], [], [], None
    batches = (b for epoch in range(1, 10**6) for b in iterate_batches(ds.splits["train"], cfg.batch_size,
                                                                       shuffle=True, seed=cfg.seed, epoch=epoch))
    for k, b in enumerate(batches):
        if k >= updates:
            break
        n = int(b.lengths.sum())
        opt.zero_grad(set_to_none=True)
        loss, finite = forward_backward(model, b, n, None)
        g = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)) if finite else math.inf
        norms.append(g)
        lengths.append(int(b.lengths.max()))
        with torch.no_grad():
            model.eval()
            h, _ = model.rnn(b.inputs, None, lengths=b.lengths)
            model.train()
        hmax.append(float(h.abs().max()))
        if not math.isfinite(g):
            first_bad = k + 1
            break
        opt.step()
    return {"dataset": dataset, "unit": unit, "lr": lr, "weight_noise": noise, "updates": len(norms),
            "first_nonfinite_update": first_bad, "grad_norms": norms, "max_abs_h": hmax, "max_length": lengths}


def _g(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=150)
    ap.add_argument("--out", default=str(REPO / "results" / "ablation" / "noaf_divergence"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = [replay(d, u, lr, noise, a.updates)
            for d in ("jsb", "nottingham") for u in ("lstm", "lstm-noaf")
            for lr, noise in ((0.00272, 0.075), (0.00272, 0.0), (0.000272, 0.075))]
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=1))
    md = ["# Why lstm-noaf diverges on Nottingham (and not on JSB)\n",
          f"Replay of the first {a.updates} updates of seed 0 (JSB: 15 per epoch, Nottingham: 44; train.py's batch order, forward_backward, "
          "clip to norm 1, RMSProp); gradient norm before clipping (float32), and the largest |h_t| the "
          "weights reach on the batch without noise. Command: `python benchmarks/noaf_divergence.py`.\n",
          "| dataset | unit | lr | weight noise | updates run | first non-finite gradient | "
          "grad norm: update 1 / median / max | max abs h: update 1 / max | longest sequence |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fin = [g for g in r["grad_norms"] if math.isfinite(g)]
        med = sorted(fin)[len(fin) // 2] if fin else math.nan
        md.append(f"| {r['dataset']} | {r['unit']} | {r['lr']:g} | {r['weight_noise']:g} | {r['updates']} | "
                  f"{r['first_nonfinite_update'] or 'none'} | {_g(r['grad_norms'][0])} / {_g(med)} / "
                  f"{_g(max(r['grad_norms']))} | {r['max_abs_h'][0]:.3g} / {max(r['max_abs_h']):.3g} | "
                  f"{max(r['max_length'])} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
