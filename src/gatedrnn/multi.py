"""Many models as one: K runs that share a dataset and an architecture but differ in learning rate,
seed, weight-noise std or patience, trained as ONE program with a leading model dimension in the
weights and the optimiser state, and early stopping per model.

The recurrence runs the units' own `cell()` equations on stacked tensors (h: (K, B, H), U: (K, G·H, H)),
so every step is one batched matmul for all K models instead of K small ones. Each model k is
built, seeded, noised (its own generator, in the same order as a single run draws from the global RNG),
batched (its own (seed, epoch) order), clipped and early-stopped exactly as `train.train` would do it,
so its run directory (config.json, metrics.jsonl, best.pt, result.json) equals that of a single run up to
float rounding — and `evaluate`, `sample` and the study read it the same way.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.batching import iterate_batches
from .model import SequenceModel
from .train import (TrainConfig, _write_metrics, build_model, evaluate, finish_run, lr_at, model_spec,
                    prepare_data)
from .utils import atomic_torch_save, load_weights, resolve_device, write_json

# What may differ between the K models; everything else must be equal.
PER_MODEL = {"lr", "seed", "weight_noise", "patience"}


class StackedModel(nn.Module):
    """K SequenceModels (same unit/sizes, Bernoulli head) as stacked parameters."""

    def __init__(self, models: list[SequenceModel]):
        super().__init__()
        # the first unit lends its cell() and options; kept out of the module tree (not a parameter owner)
        object.__setattr__(self, "template", models[0].rnn)
        self.K = len(models)
        st = lambda get: nn.Parameter(torch.stack([get(m).detach().clone() for m in models]))
        self.weight_ih = st(lambda m: m.rnn.weight_ih)       # (K, G·H, I)
        self.weight_hh = st(lambda m: m.rnn.weight_hh)       # (K, G·H, H)
        self.bias = st(lambda m: m.rnn.bias)                 # (K, G·H)
        self.peephole = st(lambda m: m.rnn.peephole) if models[0].rnn.peephole is not None else None
        self.out_weight = st(lambda m: m.head.linear.weight)  # (K, O, H)
        self.out_bias = st(lambda m: m.head.linear.bias)      # (K, O)

    def single_state_dict(self, k: int, like: SequenceModel) -> dict:
        sd = {"rnn.weight_ih": self.weight_ih[k], "rnn.weight_hh": self.weight_hh[k], "rnn.bias": self.bias[k],
              "head.linear.weight": self.out_weight[k], "head.linear.bias": self.out_bias[k]}
        if self.peephole is not None:
            sd["rnn.peephole"] = self.peephole[k]
        return {n: sd[n].detach().clone() for n in like.state_dict()}

    def forward(self, x: Tensor, lengths: Tensor, noise: list[tuple[Tensor, Tensor] | None] | None = None):
        """x (K, B, T, I), lengths (K, B) -> logits (K, B, T, O). `noise[k]` = (eps_W, eps_U) or None."""
        K, B, T, I = x.shape
        W, U = self.weight_ih, self.weight_hh
        if noise is not None and any(n is not None for n in noise):
            zW, zU = torch.zeros_like(W[0]), torch.zeros_like(U[0])
            W = W + torch.stack([n[0] if n is not None else zW for n in noise])
            U = U + torch.stack([n[1] if n is not None else zU for n in noise])
        cell = self.template
        v = self.peephole.unsqueeze(1) if self.peephole is not None else None   # (K, 1, 3, H)
        p = cell._symbols(W, U, self.bias, v)
        # W x_t + b for every model, step and gate: one batched GEMM
        wx = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(K, B * T, I), W.mT).view(K, B, T, -1)
        wx = wx.permute(2, 0, 1, 3)                                              # (T, K, B, G·H)
        mask = (torch.arange(T, device=x.device).view(T, 1, 1) < lengths.to(x.device).unsqueeze(0))
        state = cell.init_state(K * B, x)
        state = tuple(s.view(K, B, -1) for s in state) if isinstance(state, tuple) else state.view(K, B, -1)
        outs = []
        for t in range(T):
            new = cell.cell(wx[t], state, p)
            m = mask[t].unsqueeze(-1)
            state = tuple(torch.where(m, a, b) for a, b in zip(new, state)) if isinstance(new, tuple) \
                else torch.where(m, new, state)
            outs.append(cell.state_h(state))
        h = torch.stack(outs, dim=2) * mask.permute(1, 2, 0).unsqueeze(-1).to(x.dtype)  # (K, B, T, H)
        logits = torch.baddbmm(self.out_bias.unsqueeze(1), h.reshape(K, B * T, -1), self.out_weight.mT)
        return logits.view(K, B, T, -1)


def _stack_batches(batches, device):
    """K batches (one per model, possibly of different sizes/lengths) -> padded (K, B, T, ·) tensors.
    Extra rows are zero-length sequences: they touch neither state nor loss."""
    B = max(b.inputs.shape[0] for b in batches)
    T = max(b.inputs.shape[1] for b in batches)
    K, I, D = len(batches), batches[0].inputs.shape[2], batches[0].targets.shape[2]
    x, y = torch.zeros(K, B, T, I), torch.zeros(K, B, T, D)
    lengths = torch.zeros(K, B, dtype=torch.long)
    for k, b in enumerate(batches):
        n, t = b.inputs.shape[:2]
        x[k, :n, :t], y[k, :n, :t], lengths[k, :n] = b.inputs, b.targets, b.lengths
    return x.to(device), y.to(device), lengths


def _nll(logits: Tensor, y: Tensor, lengths: Tensor) -> Tensor:
    """Per-model summed NLL (K,)."""
    T = y.shape[2]
    mask = (torch.arange(T).view(1, 1, T) < lengths.unsqueeze(-1)).to(logits.device, logits.dtype)
    return (F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1) * mask).sum((1, 2))


def check_compatible(cfgs: list[TrainConfig]) -> None:
    base = {k: v for k, v in cfgs[0].model_dump().items() if k not in PER_MODEL}
    for i, c in enumerate(cfgs[1:], 1):
        other = {k: v for k, v in c.model_dump().items() if k not in PER_MODEL}
        diff = sorted(k for k in base if base[k] != other[k])
        if diff:
            raise ValueError(f"config {i} differs from config 0 in {diff}; models trained as one may differ "
                             f"only in {sorted(PER_MODEL)}")
    if cfgs[0].optimizer != "rmsprop":
        raise ValueError("many-models-as-one supports optimizer='rmsprop'; train rmsprop-momentum runs singly")


def train_many(cfgs: list[TrainConfig], out_dirs: list[str | Path], *, progress: bool = False,
               log=print) -> list[dict]:
    """Train len(cfgs) music models as one program; returns their result dicts (one run dir each)."""
    if not cfgs or len(cfgs) != len(out_dirs):
        raise ValueError("need one output directory per config")
    check_compatible(cfgs)
    outs = [Path(d) for d in out_dirs]
    done = [json.loads((o / "result.json").read_text()) if (o / "result.json").exists() else None for o in outs]
    if all(r is not None and r.get("config") == c.model_dump() for r, c in zip(done, cfgs)):
        return done
    c0 = cfgs[0]
    device = resolve_device(c0.device)
    ds = prepare_data(c0)
    if ds.kind != "music":
        raise ValueError("many-models-as-one currently covers the Bernoulli (music) head")
    spec = model_spec(c0, ds)
    singles, gens = [], []
    for cfg, out in zip(cfgs, outs):
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", cfg.model_dump())
        write_json(out / "model.json", spec)
        torch.manual_seed(cfg.seed)                    # exactly as train.train builds its model ...
        singles.append(build_model(spec, cfg.weight_noise))
        g = torch.Generator()
        g.set_state(torch.get_rng_state())             # ... and then draws its weight noise
        gens.append(g)
    K = len(cfgs)
    model = StackedModel(singles).to(device)
    params = list(model.parameters())
    sq = [torch.zeros_like(p) for p in params]         # RMSProp squared-gradient averages, per model
    group_ckpt = outs[0].parent / f".group-{outs[0].name}.pt"
    states = [{"epoch": 0, "updates": 0, "seconds": 0.0, "best_valid": math.inf, "best_epoch": 0,
               "bad_epochs": 0, "history": [], "status": "running"} for _ in cfgs]

    def evaluate_all(split):
        tot, steps = torch.zeros(K, dtype=torch.float64), 0
        with torch.no_grad():
            for b in iterate_batches(ds.splits[split], c0.eval_batch_size, shuffle=False):
                x, y, L = _stack_batches([b] * K, device)
                tot += _nll(model(x, L), y, L).double().cpu()
                steps += int(b.lengths.sum())
        return (tot / max(steps, 1)).tolist()

    def save_best(k):
        atomic_torch_save(model.single_state_dict(k, singles[k]), outs[k] / "best.pt")

    program_epoch = 0                                  # the program's clock (stopped models keep theirs)
    if group_ckpt.exists():
        ck = load_weights(group_ckpt, device)  # weights-only: executes nothing
        if ck["configs"] != [c.model_dump() for c in cfgs]:
            raise ValueError(f"{group_ckpt} belongs to other configs; remove it or use new directories")
        model.load_state_dict(ck["model"])
        for s, t in zip(sq, ck["sq"]):
            s.copy_(t)
        for g, st in zip(gens, ck["gens"]):
            g.set_state(st)
        states, program_epoch = ck["states"], ck["epoch"]
        log(f"resuming {K} models at epoch {program_epoch}")
    else:
        tr, va = evaluate_all("train"), evaluate_all("valid")
        for k in range(K):
            states[k]["history"].append({"epoch": 0, "updates": 0, "seconds": 0.0, "train_nll": tr[k],
                                         "valid_nll": va[k], "lr": cfgs[k].lr})
            states[k]["best_valid"] = va[k] if math.isfinite(va[k]) else math.inf
            save_best(k)

    def checkpoint():
        atomic_torch_save({"configs": [c.model_dump() for c in cfgs], "model": model.state_dict(), "sq": sq,
                           "gens": [g.get_state() for g in gens], "states": states,
                           "epoch": program_epoch}, group_ckpt)
        for k in range(K):
            _write_metrics(outs[k], states[k]["history"])

    checkpoint()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=c0.epochs, initial=program_epoch, unit="epoch", desc=f"{K} models as one")
    alpha, eps = c0.rms_decay, 1e-6
    while any(s["status"] == "running" for s in states) and program_epoch < c0.epochs:
        epoch = program_epoch = program_epoch + 1
        active = [s["status"] == "running" for s in states]
        started = list(active)
        lr = torch.tensor([lr_at(c, epoch - 1) if a else 0.0 for c, a in zip(cfgs, active)], device=device)
        iters = [iterate_batches(ds.splits["train"], c0.batch_size, shuffle=True, seed=c.seed, epoch=epoch)
                 for c in cfgs]
        t0 = time.perf_counter()
        for batches in zip(*iters):
            x, y, L = _stack_batches(list(batches), device)
            noise = []
            for k, c in enumerate(cfgs):              # same draws, same order as RecurrentUnit.noisy_weights
                if c.weight_noise > 0:
                    eW = torch.randn(model.weight_ih.shape[1:], generator=gens[k])
                    eU = torch.randn(model.weight_hh.shape[1:], generator=gens[k])
                    noise.append(((c.weight_noise * eW).to(device), (c.weight_noise * eU).to(device)))
                else:
                    noise.append(None)
            n_steps = L.sum(1).clamp_min(1).to(device)
            loss_k = _nll(model(x, L, noise), y, L) / n_steps          # per-model mean NLL per step
            finite = torch.isfinite(loss_k).cpu()
            for k in range(K):
                if active[k] and not finite[k]:
                    states[k]["status"], active[k] = "diverged", False
                    lr[k] = 0.0
            for p in params:
                p.grad = None
            torch.where(finite.to(device), loss_k, torch.zeros_like(loss_k)).sum().backward()
            with torch.no_grad():
                grads = [torch.nan_to_num(p.grad) for p in params]
                # per-model gradient norm rescaling (as torch.nn.utils.clip_grad_norm_)
                norms = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in grads))
                coef = (torch.tensor([c.clip_norm for c in cfgs], device=device) / (norms + 1e-6)).clamp(max=1.0)
                for p, g, s in zip(params, grads, sq):
                    shape = (K,) + (1,) * (p.dim() - 1)
                    g = g * coef.view(shape)
                    s.mul_(alpha).addcmul_(g, g, value=1 - alpha)            # RMSProp, as torch.optim.RMSprop
                    p.addcdiv_(g * lr.view(shape), s.sqrt().add(eps), value=-1.0)
            for k in range(K):
                if active[k]:
                    states[k]["updates"] += 1
        dt = time.perf_counter() - t0
        tr, va = evaluate_all("train"), evaluate_all("valid")
        for k, s in enumerate(states):
            if not started[k]:
                continue
            s["seconds"] += dt / K                     # wall-clock shared by the K models
            s["epoch"] = epoch
            if s["status"] == "diverged":
                s["history"].append({"epoch": epoch, "updates": s["updates"], "seconds": s["seconds"],
                                     "diverged": True})
                continue
            s["history"].append({"epoch": epoch, "updates": s["updates"], "seconds": s["seconds"],
                                 "train_nll": tr[k], "valid_nll": va[k], "lr": float(lr[k])})
            if not (math.isfinite(tr[k]) and math.isfinite(va[k])):
                s["status"] = "diverged"
            elif va[k] < s["best_valid"]:
                s["best_valid"], s["best_epoch"], s["bad_epochs"] = va[k], epoch, 0
                save_best(k)
            else:
                s["bad_epochs"] += 1
                if s["bad_epochs"] >= cfgs[k].patience:
                    s["status"] = "early_stopped"
        checkpoint()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = []
    for k, (cfg, out, s) in enumerate(zip(cfgs, outs, states)):
        if s["status"] == "running":
            s["status"] = "completed"
        _write_metrics(out, s["history"])
        results.append(finish_run(cfg, ds, singles[k].to(device), s, out, device))
    group_ckpt.unlink(missing_ok=True)
    return results
