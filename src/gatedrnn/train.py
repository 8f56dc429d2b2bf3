"""ONE training loop for every (unit, head, dataset): the paper's protocol, in plain sight.

    RMSProp (plain, or the authors' momentum variant)
    + additive Gaussian weight noise (std 0.075, resampled every forward pass, training only)
    + gradient norm rescaled to 1 when above 1
    + early stopping on validation NLL, keeping the best-validation model
    + a checkpoint every epoch, so a killed run resumes where it stopped, bit for bit.

A run directory holds: config.json (the resolved config), metrics.jsonl (one line per epoch:
updates, epoch, seconds, train/valid NLL), checkpoint.pt (resume state), best.pt (best model) and,
at the end, result.json (train/valid/test NLL of the best model, status, versions, data checksums).
A run that diverges (NaN/inf loss) is recorded with status "diverged"; it does not raise. Statuses are
gatedrnn.status.RunStatus members in memory and plain strings in every file and returned dict.

The same loop trains K >= 1 models that share a dataset and an architecture (`train_many`; `train` is
K = 1): each is its own single run, in its own run directory; their recurrences share one stacked
call where they can (equal to the single runs up to float rounding; see `train_many`).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

# The config and its sets of fields (config.py, torch-free), re-exported: gatedrnn.train.TrainConfig etc.
from .config import (NOT_COMPUTED, SHARED, TRAIN_ROLES, UNIT_NAMES, UNIT_OPTIONS, TrainConfig, canonical_unit,
                     given_options, same_run)
from .data import load_dataset, resolve_data_dir
from .data.batching import iterate_batches
from .model import SequenceModel
from .nn import unit_options
from .nn.imported import allow_units, check_unit, is_import_path, source_record
from .nn.counting import BUDGET, TABLE1_INPUT, count_parameters, match_hidden_size
from .status import RunStatus
from .utils import (WeightsFileError, atomic_torch_save, atomic_write_text, environment, load_state, load_weights,
                    resolve_device, write_json)

__all__ = ["TrainConfig", "TRAIN_ROLES", "UNIT_NAMES", "UNIT_OPTIONS", "NOT_COMPUTED", "SHARED", "same_run",
           "given_options", "canonical_unit", "is_import_path", "train", "train_many", "evaluate", "load_run",
           "prepare_data", "name_units", "model_spec", "build_model", "ModelSpec", "LoopTimer"]

CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------------------- optimiser
class RMSPropMomentum(torch.optim.Optimizer):
    """The authors' released variant: v = ρ v + (1−ρ) g²;  Δ = μ Δ − lr g / max(√v, floor);
    the whole update Δ rescaled to norm ≤ max_update_norm;  θ += Δ."""

    def __init__(self, params, lr, rho=0.95, momentum=0.9, floor=0.01, max_update_norm=1.0):
        super().__init__(params, dict(lr=lr, rho=rho, momentum=momentum, floor=floor,
                                      max_update_norm=max_update_norm))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            updates = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["v"] = torch.zeros_like(p)
                    st["delta"] = torch.zeros_like(p)
                v, d = st["v"], st["delta"]
                v.mul_(group["rho"]).addcmul_(p.grad, p.grad, value=1 - group["rho"])
                d.mul_(group["momentum"]).addcdiv_(p.grad, v.sqrt().clamp_min_(group["floor"]),
                                                   value=-group["lr"])
                updates.append((p, d))
            norm = torch.sqrt(sum((d * d).sum() for _, d in updates)) if updates else 0.0
            scale = min(1.0, group["max_update_norm"] / (float(norm) + 1e-12))
            for p, d in updates:
                if scale < 1.0:
                    d.mul_(scale)
                p.add_(d)


def make_optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rms_decay, eps=1e-6)
    return RMSPropMomentum(params, lr=cfg.lr, rho=cfg.rms_decay, momentum=cfg.momentum,
                           floor=cfg.rms_floor)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Linear decay from lr to lr*lr_final over lr_decay_epochs (released code: to 1% by 500)."""
    frac = min(epoch / cfg.lr_decay_epochs, 1.0)
    return cfg.lr * (1 - frac * (1 - cfg.lr_final))


# ---------------------------------------------------------------------------- pieces
def resolve_hidden_size(cfg: TrainConfig, kind: str, input_size: int) -> int:
    if cfg.hidden_size is not None:
        return cfg.hidden_size
    # Table 1's convention: counted at the nominal input size of the data's kind (music 100, speech 20; see
    # nn/counting.py), so a budget of 20,100 on music is the paper's own sizes; `budget` changes only the
    # budget (the unit as it is built, e.g. the LSTM without peepholes)
    if cfg.budget is not None:
        return match_hidden_size(cfg.unit, TABLE1_INPUT[kind], cfg.budget, **given_options(cfg))
    return match_hidden_size(cfg.unit, TABLE1_INPUT[kind], BUDGET[kind])


def name_units(units, sizes=()) -> None:
    """The units a command line names by import path (package.module:ClassName): allowed to be imported,
    here and in the worker processes this one starts (nn/imported.py), and checked before anything trains —
    it imports, its class has the contract's signatures, its output has the shape (batch, time, hidden),
    and, for each (kind, input_size) of `sizes`, Table 1's budget of that kind is matched and that size runs.
    Every failure is one line (UnitImportError, a ValueError: the CLI exits 2)."""
    for unit in units:
        if not is_import_path(unit):
            continue
        allow_units(unit)
        check_unit(unit)
        for kind, input_size in sizes:
            check_unit(unit, input_size, match_hidden_size(unit, TABLE1_INPUT[kind], BUDGET[kind]))


def prepare_data(cfg: TrainConfig):
    # load_dataset returns the object it cached for every run of this process: slice a copy
    ds = load_dataset(cfg.dataset, cfg.data_dir, fmt=cfg.data_format, width=cfg.width)
    return (ds.sliced(cfg.limit_sequences, cfg.crop_length, spread=cfg.subset == "spread")
            if cfg.limit_sequences or cfg.crop_length else ds)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a run's model without the data, saved as model.json (the same JSON
    object as before it was typed: `to_json`, `from_json`; `spec["kind"]` still reads a field)."""
    unit: str
    input_size: int
    hidden_size: int
    output_size: int
    head: str                                   # "bernoulli" (music) or "mdn" (speech)
    unit_kwargs: dict[str, Any]                 # the options the unit is built with (its declaration's)
    kind: str                                   # "music" or "speech"
    dataset: str
    meta: dict[str, Any] = field(default_factory=dict)
    data_dir_resolved: str | None = None        # where the run read its data (evaluate/sample find it there)
    # a unit named by import path: {"import_path", "class", "file", "sha256"} (nn/imported.py); None otherwise
    # (and then absent from model.json, which stays what it was for every registered unit)
    unit_source: dict[str, Any] | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        if d["unit_source"] is None:
            del d["unit_source"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ModelSpec":
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if not required <= set(d) or not set(d) <= names:
            raise ValueError(f"not a model spec (model.json): missing {sorted(required - set(d))}, "
                             f"unknown {sorted(set(d) - names)}")
        return cls(**d)

    def __getitem__(self, key: str):
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)


def model_spec(cfg: TrainConfig, ds) -> ModelSpec:
    """Everything needed to rebuild the model without the data (saved as model.json); the unit gets
    every option its declaration takes (the config's where it gives one, else the unit's default)."""
    return ModelSpec(unit=cfg.unit, input_size=ds.input_size,
                     hidden_size=resolve_hidden_size(cfg, ds.kind, ds.input_size),
                     output_size=ds.target_size, head="bernoulli" if ds.kind == "music" else "mdn",
                     unit_kwargs=unit_options(cfg.unit, **given_options(cfg)), kind=ds.kind, dataset=ds.name,
                     meta=ds.meta, unit_source=source_record(cfg.unit) if is_import_path(cfg.unit) else None)


def build_model(spec: ModelSpec | dict, weight_noise: float = 0.0) -> SequenceModel:
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_json(spec)
    return SequenceModel(spec.unit, spec.input_size, spec.hidden_size, spec.output_size,
                         head=spec.head, weight_noise=weight_noise, **spec.unit_kwargs)


@torch.no_grad()
def evaluate(model: SequenceModel, pairs, batch_size: int, device) -> dict:
    """NLL of a split with the model in eval mode (no weight noise), by two conventions:

    nll         nats per step (per frame for music), summed over the outputs of a step, averaged over
                every step of the split (Σ NLL / Σ steps; the first step scored from the zero input);
    nll_seqavg  the mean over the split's sequences of each sequence's own NLL per scored step, its first
                step NOT scored (the authors' code: inputs seq[:-1], targets seq[1:]; their later library
                averaged per sequence). A sequence of one step has nothing scored and is left out;
    nll_seq     nats per sequence (total / number of sequences)."""
    from .data.batching import eval_batches
    was_training = model.training
    model.eval()
    total, steps, seq_sum, seq_n = 0.0, 0, 0.0, 0
    # the split's batches are collated once and cached (compact uint8 where exact); on the CPU the
    # model scores them with the forward-only fused kernels (SequenceModel.step_nll)
    for b in eval_batches(pairs, batch_size):
        b = b.to(device)
        per_step = model.step_nll(b.inputs, b.targets, b.mask, b.lengths)     # (B, T) float64, 0 at padding
        total += float(per_step.sum())
        steps += b.steps
        scored = b.lengths.to(torch.float64) - 1                              # steps 2..L of each sequence
        keep = scored > 0
        if bool(keep.any()):
            per_seq = (per_step.sum(1) - per_step[:, 0])[keep] / scored[keep]
            seq_sum += float(per_seq.sum())
            seq_n += int(keep.sum())
    model.train(was_training)
    return {"nll": total / max(steps, 1), "nll_seqavg": seq_sum / seq_n if seq_n else math.nan,
            "nll_seq": total / max(len(pairs), 1), "steps": steps, "sequences": len(pairs)}


def forward_backward(model: SequenceModel, b, n: int, tbptt: int | None, timer=None) -> tuple[float, bool]:
    """Loss (mean NLL per step of batch b, n steps) and its gradient, accumulated in the parameters.
    Returns (loss, finite); a non-finite loss is not back-propagated. `timer`: a LoopTimer (the loop's), whose
    phases forward and backward end here.

    tbptt=K: truncated back-propagation through time. The batch runs in windows of K steps; the state is
    carried across windows but detached, so no gradient flows further back than K steps (Williams &
    Peng 1990). Still ONE update per batch (the windows' gradients are summed), so the protocol is
    otherwise unchanged; weight noise is drawn afresh per window (a forward pass each)."""
    timer = timer or NO_TIMER
    T = b.inputs.shape[1]
    if not tbptt or T <= tbptt:
        loss = model.nll(b.inputs, b.targets, b.mask, b.lengths).sum() / n
        finite = bool(torch.isfinite(loss))
        timer.lap("forward")
        if not finite:
            return float(loss.detach()), False
        loss.backward()
        timer.lap("backward")
        return float(loss.detach()), True
    total, state = 0.0, None
    for s in range(0, T, tbptt):
        e = min(T, s + tbptt)
        lengths = (b.lengths - s).clamp(0, e - s)
        if int(lengths.max()) == 0:
            break
        params, state = model(b.inputs[:, s:e], lengths, state)
        loss = (model.head.nll(params, b.targets[:, s:e]) * b.mask[:, s:e].to(params.dtype)).sum() / n
        finite = bool(torch.isfinite(loss))
        timer.lap("forward")
        if not finite:
            return float(loss.detach()), False
        loss.backward()
        timer.lap("backward")
        state = tuple(x.detach() for x in state) if isinstance(state, tuple) else state.detach()
        total += float(loss.detach())
    return total, True


def _finite(x: float) -> bool:
    return math.isfinite(x)


# ---------------------------------------------------------------------------- timing the loop
class LoopTimer:
    """Where the loop's time goes, phase by phase: `train(..., timer=LoopTimer())`, then `timer.epochs`
    holds one {"epoch": e, phase: seconds, ...} per epoch the call trained (not the untrained model's
    evaluation before epoch 1). The loop calls `lap(phase)` after each piece of work, booking the time since
    the previous lap to that phase, so an epoch's phases add up to its whole span:

        batches     drawing the epoch's batches (length buckets, collation) and moving them to the device
        forward     forward passes and losses: weight noise, recurrences, read-outs, the finiteness check
        backward    backward passes
        optimiser   zero_grad, gradient clipping, the optimiser step
        eval_train  the training split's NLL (the epochs eval_train_every selects)
        eval_valid  the validation split's NLL
        checkpoint  best.pt (when the model improved), checkpoint.pt, metrics.jsonl
        other       the rest: bookkeeping, log lines, the progress bar

    `clock`: time.perf_counter (wall seconds, the default) or time.process_time (CPU seconds: what a study
    pays; benchmarks/study_cost.py). Models trained together (train_many) share one timer, so their phases
    add up. Without a timer the loop calls NO_TIMER, whose hooks do nothing: a timed run computes exactly
    what an untimed one does."""
    PHASES = ("batches", "forward", "backward", "optimiser", "eval_train", "eval_valid", "checkpoint", "other")

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.epochs: list[dict] = []
        self._last = 0.0

    def begin(self, epoch: int) -> None:
        self.epochs.append({"epoch": epoch, **dict.fromkeys(self.PHASES, 0.0)})
        self._last = self.clock()

    def lap(self, phase: str) -> None:
        now = self.clock()
        self.epochs[-1][phase] += now - self._last
        self._last = now

    def end(self) -> None:
        self.lap("other")


class _NoTimer:
    def begin(self, epoch: int) -> None:
        pass

    def lap(self, phase: str) -> None:
        pass

    def end(self) -> None:
        pass


NO_TIMER = _NoTimer()


# ---------------------------------------------------------------------------- the loop
def check_compatible(cfgs: list[TrainConfig]) -> None:
    base = cfgs[0].model_dump()
    for i, c in enumerate(cfgs[1:], 1):
        other = c.model_dump()
        diff = [k for k in SHARED if base[k] != other[k]]
        if diff:
            raise ValueError(f"config {i} differs from config 0 in {diff}; models trained together share "
                             f"{list(SHARED)}")


def _stacked_unit():
    """The recurrence of K units of one kind as one call (one fused kernel on the CPU): the one place
    that names where it lives."""
    from .nn import StackedUnit
    return StackedUnit


# Stacking K models into one recurrence call pays only where it was measured to (per model, K stacked against
# one model alone; issue 21: K = 10, one thread, batch 64, T 200: LSTM-36 0.94x, GRU-46 1.13x, tanh-100 1.69x;
# whole runs, benchmarks/results/multi-*.json, K = 5, paired medians: LSTM 0.97x, GRU 1.03x, tanh 1.03x; the
# training loops alone 0.93x, 1.03x, 1.10x). The unit family -> the largest hidden size measured to win;
# everything else (other families, larger sizes, never measured) trains the models apart, one after the
# other in the same loop, which costs what training them one by one costs.
STACK_WINS_UP_TO: dict[str, int] = {"lstm": 36}


def stacking_wins(unit: str, hidden_size: int) -> bool:
    """THE decision whether train_many stacks its models' recurrences (one K-model call) or runs them apart:
    only where it measured faster per model (STACK_WINS_UP_TO; docs/UNITS.md "Many models as one")."""
    from .nn import unit_family
    return hidden_size <= STACK_WINS_UP_TO.get(unit_family(unit), 0)


def train(cfg: TrainConfig, out_dir: str | Path, *, progress: bool = False, resume: bool = True,
          log=print, stop_after: int | None = None, log_every: float = 0.0, timer: LoopTimer | None = None) -> dict:
    """Train one model; returns the result dict (also written to out_dir/result.json).

    stop_after=E pauses the run after epoch E (checkpointed, no result.json) and returns
    {"status": "paused", "epoch", "best_valid", "best_epoch"}; calling again continues it (successive
    halving uses this). Without a progress bar, one line per epoch goes to `log` (at most one per
    `log_every` seconds). `timer`: a LoopTimer, filled with the time of each phase of each epoch."""
    return train_many([cfg], [out_dir], progress=progress, resume=resume, log=log, stop_after=stop_after,
                      log_every=log_every, timer=timer)[0]


def train_many(cfgs: list[TrainConfig], out_dirs: list[str | Path], *, progress: bool = False,
               resume: bool = True, log=print, stop_after: int | None = None,
               log_every: float = 0.0, timer: LoopTimer | None = None) -> list[dict]:
    """Train K >= 1 models that share a dataset and an architecture (the fields in SHARED) in one loop;
    returns their result dicts, in order (a single run is K = 1: `train`).

    Each model is the single run of its config: its own initialisation, weight-noise draws (its own RNG
    stream), batch order, optimiser, clipping, skipping, early stopping, divergence and run directory
    (the files `train` writes, resumable one by one). A model that stops stops updating; the others go
    on. Where stacking wins (`stacking_wins`: the unit and size measured faster stacked) and two or more
    models take a full-sequence step together, their recurrences run as one K-model call
    (`_stacked_unit`: batches zero-padded to a common shape, each model's loss from its own head on its
    slice), which equals the single runs up to float rounding; otherwise, and for truncated (tbptt)
    steps and a model training alone, each model runs the single-model path."""
    cfgs, outs = list(cfgs), [Path(d) for d in out_dirs]
    if not cfgs or len(cfgs) != len(outs):
        raise ValueError("need one output directory per config")
    if len({o.resolve() for o in outs}) != len(outs):
        raise ValueError("every model needs its own output directory")
    check_compatible(cfgs)
    runs = [_Run(c, o, len(cfgs)) for c, o in zip(cfgs, outs)]
    for r in runs:
        r.check(resume, stop_after)
    todo = [r for r in runs if r.result is None]
    if todo:
        for r in todo:
            write_json(r.out / "config.json", r.cfg_json)
        device = resolve_device(cfgs[0].device)
        ds = prepare_data(cfgs[0])
        for r in todo:
            r.start(ds, device, resume, log)
        _loop(todo, ds, device, progress, log, stop_after, log_every, timer or NO_TIMER)
        for r in todo:
            r.result = r.finish(ds, device)
    return [r.result for r in runs]


class _Run:
    """One model's run: config, directory, model, optimiser, RNG stream and bookkeeping state."""

    def __init__(self, cfg: TrainConfig, out: Path, K: int):
        self.cfg, self.out, self.cfg_json = cfg, out, cfg.model_dump()
        self.ckpt_path, self.best_path = out / "checkpoint.pt", out / "best.pt"
        self.result: dict | None = None
        self.tag = "" if K == 1 else f"{out}: "      # log lines name the model when there are several

    def check(self, resume: bool, stop_after: int | None = None) -> None:
        """A finished run is never repeated (self.result); a directory holding another run is refused.
        A run paused at or past stop_after before is that pause again, even without its checkpoint (paused.json:
        a committed halving study's cut candidates keep no weights)."""
        self.out.mkdir(parents=True, exist_ok=True)
        result_path, saved_cfg = self.out / "result.json", self.out / "config.json"
        if resume and result_path.exists():
            prev = json.loads(result_path.read_text())
            if same_run(prev.get("config") or {}, self.cfg_json):
                self.result = prev
                return
        paused = self.out / "paused.json"
        if resume and stop_after is not None and paused.exists() and not self.ckpt_path.exists():
            prev = json.loads(paused.read_text())
            if same_run(prev.get("config") or {}, self.cfg_json) and int(prev.get("epoch", -1)) >= stop_after:
                self.result = prev
                return
        if resume and saved_cfg.exists() and not same_run(json.loads(saved_cfg.read_text()), self.cfg_json):
            raise ValueError(f"{self.out} holds a run with a different config; use a new output directory "
                             f"(or --no-resume to overwrite)")

    def start(self, ds, device, resume: bool, log) -> None:
        """Build the model from the run's seed, then resume its checkpoint or evaluate it untrained."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        spec = model_spec(cfg, ds)
        # where the data was read from, so `evaluate`/`sample --prime` find it in a shell without the env var
        data_root = resolve_data_dir(cfg.data_dir)
        spec = replace(spec, data_dir_resolved=str(data_root.resolve()) if data_root else None)
        write_json(self.out / "model.json", spec.to_json())
        self.model = model = build_model(spec, cfg.weight_noise).to(device)
        self.opt = make_optimizer(cfg, model.parameters())
        self.rng = torch.get_rng_state()               # this model's stream: init draws done, noise next
        self.name = f"{cfg.dataset}/{cfg.unit}-{model.rnn.hidden_size} lr {cfg.lr:.4g} seed {cfg.seed}"
        self.last_line = 0.0
        self.state = {"epoch": 0, "updates": 0, "seconds": 0.0, "best_valid": math.inf, "best_epoch": 0,
                      "bad_epochs": 0, "skipped": 0, "history": [], "status": RunStatus.RUNNING}
        if resume and self.ckpt_path.exists():
            ck = load_weights(self.ckpt_path, device)   # weights-only: a crafted checkpoint executes nothing
            if not isinstance(ck, dict) or ck.get("version") != CHECKPOINT_VERSION \
                    or not same_run(ck.get("config") or {}, self.cfg_json):
                raise ValueError(f"{self.ckpt_path} does not belong to this config; use a new output directory")
            _load_checkpoint(self.ckpt_path, ck, model, self.opt)
            self.rng = ck["rng"]
            self.state = {"skipped": 0, **ck["state"]}
            if self.state["status"] == RunStatus.PAUSED:
                self.state["status"] = RunStatus.RUNNING
            log(f"resuming {self.out} at epoch {self.state['epoch']}")
        else:
            # Epoch 0: the untrained model, so every learning curve starts at the same place.
            t0 = time.perf_counter()
            tr, va = self.evaluate(ds, "train", device), self.evaluate(ds, "valid", device)
            self.state["history"].append({"epoch": 0, "updates": 0, "seconds": 0.0,
                                          "eval_seconds": time.perf_counter() - t0,
                                          "train_nll": tr["nll"], "valid_nll": va["nll"],
                                          "train_nll_seqavg": tr["nll_seqavg"],
                                          "valid_nll_seqavg": va["nll_seqavg"], "lr": cfg.lr})
            self.state["best_valid"] = va["nll"] if _finite(va["nll"]) else math.inf
            atomic_torch_save(model.state_dict(), self.best_path)
            self.save_checkpoint()
        _write_metrics(self.out, self.state["history"])

    def evaluate(self, ds, split: str, device) -> dict:
        return evaluate(self.model, ds.splits[split], self.cfg.eval_batch_size, device)

    @contextmanager
    def own_rng(self):
        """Draws (the weight noise) come from this model's stream, as if it ran alone. (The CPU's stream:
        on CUDA the noise comes from the device's one generator, so models trained together there equal
        their single runs in distribution, not draw for draw.)"""
        torch.set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = torch.get_rng_state()

    def begin_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = lr_at(cfg, epoch - 1)
        self.running, self.frames, self.updates_before = 0.0, 0, self.state["updates"]

    def update(self, loss: float, finite: bool, n: int) -> None:
        """After forward/backward: clip, then step — or skip a non-finite update, or declare divergence."""
        state, model, cfg = self.state, self.model, self.cfg
        if finite:
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)  # rescale to ≤ 1
            finite = bool(torch.isfinite(gnorm))
        if not finite:
            state["skipped"] += 1
            if state["skipped"] > cfg.skip_nonfinite:
                state["status"] = RunStatus.DIVERGED
                return
            self.opt.zero_grad(set_to_none=True)          # skip this update (no step)
            return
        self.opt.step()
        state["updates"] += 1
        self.running += loss * n
        self.frames += n

    def end_epoch(self, epoch: int, train_seconds: float, ds, device, log, log_every: float,
                  timer=NO_TIMER) -> dict | None:
        """Evaluate, early-stop, checkpoint; returns the epoch's metrics row (None if the run diverged)."""
        cfg, state = self.cfg, self.state
        if state["status"] == RunStatus.RUNNING and state["updates"] == self.updates_before and state["skipped"]:
            state["status"] = RunStatus.DIVERGED  # skipping is for rare overflows: an epoch without one update is not training
            log(f"{self.tag}every update of epoch {epoch} had a non-finite loss or gradient")
        state["seconds"] += train_seconds
        state["epoch"] = epoch
        if state["status"] == RunStatus.DIVERGED:
            log(f"{self.tag}run diverged (non-finite loss or gradient) in epoch {epoch}"
                + (f" after {cfg.skip_nonfinite} skipped updates" if cfg.skip_nonfinite else "")
                + "; keeping the best model so far")
            state["history"].append({"epoch": epoch, "updates": state["updates"],
                                     "seconds": state["seconds"], "skipped_updates": state["skipped"],
                                     "diverged": True})
            return None

        timer.lap("other")
        t1 = time.perf_counter()
        tr = self.evaluate(ds, "train", device) if epoch % cfg.eval_train_every == 0 else None
        timer.lap("eval_train")
        va = self.evaluate(ds, "valid", device)
        timer.lap("eval_valid")
        row = {"epoch": epoch, "updates": state["updates"], "seconds": state["seconds"],
               "eval_seconds": time.perf_counter() - t1,
               **({"train_nll": tr["nll"], "train_nll_seqavg": tr["nll_seqavg"]} if tr else {}),
               "train_nll_running": self.running / max(self.frames, 1), "valid_nll": va["nll"],
               "valid_nll_seqavg": va["nll_seqavg"],
               "lr": self.opt.param_groups[0]["lr"]}
        if cfg.skip_nonfinite:
            row["skipped_updates"] = state["skipped"]
        state["history"].append(row)
        if not ((tr is None or _finite(tr["nll"])) and _finite(va["nll"])):
            state["status"] = RunStatus.DIVERGED
            log(f"{self.tag}run diverged (non-finite NLL) after epoch {epoch}; keeping the best model so far")
        elif va["nll"] < state["best_valid"]:
            state["best_valid"], state["best_epoch"], state["bad_epochs"] = va["nll"], epoch, 0
            atomic_torch_save(self.model.state_dict(), self.best_path)
        else:
            state["bad_epochs"] += 1
            if cfg.patience and state["bad_epochs"] >= cfg.patience:
                state["status"] = RunStatus.EARLY_STOPPED
        self.save_checkpoint()
        _write_metrics(self.out, state["history"])
        timer.lap("checkpoint")
        return row

    def finish(self, ds, device) -> dict:
        state = self.state
        if state["status"] == RunStatus.PAUSED:
            self.save_checkpoint()
            res = {"status": str(RunStatus.PAUSED), "epoch": state["epoch"], "best_valid": state["best_valid"],
                   "best_epoch": state["best_epoch"], "config": self.cfg_json}
            write_json(self.out / "paused.json", res)    # the pause without weights (see check)
            return res
        if state["status"] == RunStatus.RUNNING:
            state["status"] = RunStatus.COMPLETED
        self.save_checkpoint()
        _write_metrics(self.out, state["history"])
        return finish_run(self.cfg, ds, self.model, state, self.out, device)

    def save_checkpoint(self) -> None:
        _save_checkpoint(self.ckpt_path, self.cfg_json, self.model, self.opt, self.state, self.rng)


def _loop(runs: list[_Run], ds, device, progress: bool, log, stop_after: int | None, log_every: float,
          timer=NO_TIMER) -> None:
    """Epochs until every run has stopped (completed, early-stopped, diverged or paused at stop_after);
    `timer` (LoopTimer or NO_TIMER) books each phase of each epoch."""
    bar = None
    if progress:
        from tqdm.auto import tqdm
        r0 = runs[0]
        desc = f"{r0.cfg.dataset}/{r0.cfg.unit}-{r0.model.rnn.hidden_size}"
        bar = tqdm(total=max(r.cfg.epochs for r in runs), initial=min(r.state["epoch"] for r in runs),
                   unit="epoch", dynamic_ncols=True, desc=desc if len(runs) == 1 else f"{len(runs)} × {desc}")
        bar.set_postfix(valid=f"{min(r.state['best_valid'] for r in runs):.3f}")
    # models trained together share one unit kind (check_compatible). Their recurrences are stacked where
    # that wins (stacking_wins) and the unit can be (lstm-fgr's R does not stack); otherwise the models run
    # apart (stacks None)
    rnn = runs[0].model.rnn
    stacks: dict | None = None
    if len(runs) > 1 and stacking_wins(runs[0].cfg.unit, rnn.hidden_size) and _stacked_unit().stackable(rnn):
        stacks = {}
    while True:
        live = [r for r in runs if r.state["status"] == RunStatus.RUNNING and r.state["epoch"] < r.cfg.epochs]
        for r in live:
            if stop_after is not None and r.state["epoch"] >= stop_after:
                r.state["status"] = RunStatus.PAUSED
        live = [r for r in live if r.state["status"] == RunStatus.RUNNING]
        if not live:
            break
        # a run resumed from a later checkpoint than the others waits for them
        epoch = min(r.state["epoch"] for r in live) + 1
        active = [r for r in live if r.state["epoch"] == epoch - 1]
        timer.begin(epoch)
        for r in active:
            r.begin_epoch(epoch)
        t0 = time.perf_counter()
        batches = {r: iterate_batches(ds.splits["train"], r.cfg.batch_size, shuffle=True, seed=r.cfg.seed,
                                      epoch=epoch) for r in active}
        while batches:
            step = []
            for r, it in list(batches.items()):
                b = next(it, None)
                if b is None:
                    del batches[r]
                else:
                    step.append((r, b.to(device)))
            timer.lap("batches")
            _step(step, stacks, device, timer)
            for r, _ in step:
                if r.state["status"] == RunStatus.DIVERGED:
                    del batches[r]
        train_seconds = (time.perf_counter() - t0) / len(active)   # wall-clock shared by the models
        for r in active:
            row = r.end_epoch(epoch, train_seconds, ds, device, log, log_every, timer)
            if row is None or bar is not None:
                continue
            if time.monotonic() - r.last_line >= log_every or r.state["status"] != RunStatus.RUNNING:
                r.last_line = time.monotonic()   # no terminal (logs, CI, workers): one line per epoch
                s = r.state
                train = f"train {row['train_nll']:.4f}  " if "train_nll" in row else ""
                log(f"{r.name}: epoch {epoch}/{r.cfg.epochs}  {train}"
                    f"valid {row['valid_nll']:.4f}  best {s['best_valid']:.4f}@{s['best_epoch']}  "
                    f"({row['seconds']:.0f} s training)")
        if bar is not None:
            bar.update(1)
            if len(runs) == 1 and runs[0].state["history"][-1].get("valid_nll") is not None:
                s, row = runs[0].state, runs[0].state["history"][-1]
                bar.set_postfix(**({"train": f"{row['train_nll']:.3f}"} if "train_nll" in row else {}),
                                valid=f"{row['valid_nll']:.3f}", best=f"{s['best_valid']:.3f}@{s['best_epoch']}")
            else:
                bar.set_postfix(best=f"{min(r.state['best_valid'] for r in runs):.3f}",
                                training=sum(r.state["status"] == RunStatus.RUNNING for r in runs))
        timer.end()
    if bar is not None:
        bar.close()


def _step(step: list, stacks: dict | None, device, timer=NO_TIMER) -> None:
    """One update of every model in `step` ((run, batch) pairs). Full-sequence steps of two or more
    models share one stacked recurrence; the rest run the single-model forward_backward."""
    full = [(r, b) for r, b in step if not r.cfg.tbptt or b.inputs.shape[1] <= r.cfg.tbptt]
    if len(full) < 2 or stacks is None:
        full = []
    for r, b in step:
        if any(r is f for f, _ in full):
            continue
        n = int(b.lengths.sum())
        r.opt.zero_grad(set_to_none=True)
        timer.lap("optimiser")
        with r.own_rng():
            loss, finite = forward_backward(r.model, b, n, r.cfg.tbptt, timer)  # loss: mean NLL per step
        r.update(loss, finite, n)
        timer.lap("optimiser")
    if full:
        for (r, b), (loss, finite, n) in zip(full, _forward_backward_stacked(full, stacks, device, timer)):
            r.update(loss, finite, n)
        timer.lap("optimiser")


def _forward_backward_stacked(group: list, stacks: dict, device, timer=NO_TIMER) -> list[tuple[float, bool, int]]:
    """forward_backward for K models at once: each unit's noisy weights (its own draws), stacked so the
    gradient flows back to each model's parameters; one K-model recurrence over the batches zero-padded
    to a common (B, T) (padded rows have length 0: they touch neither state nor loss); each model's own
    head and loss on its slice. Returns (loss, finite, steps) per model."""
    rnns = [r.model.rnn for r, _ in group]
    Ws, Us = [], []
    for r, _ in group:
        r.opt.zero_grad(set_to_none=True)
        with r.own_rng():
            W, U = r.model.rnn.noisy_weights()
        Ws.append(W)
        Us.append(U)
    K = len(group)
    B = max(b.inputs.shape[0] for _, b in group)
    T = max(b.inputs.shape[1] for _, b in group)
    x = group[0][1].inputs.new_zeros(K, B, T, rnns[0].input_size)
    lengths = torch.zeros(K, B, dtype=torch.long)
    for k, (_, b) in enumerate(group):
        x[k, :b.inputs.shape[0], :b.inputs.shape[1]] = b.inputs
        lengths[k, :b.inputs.shape[0]] = b.lengths
    params = {"weight_ih": torch.stack(Ws), "bias": torch.stack([u.bias for u in rnns])}
    if Us[0] is not None:                 # (None: a unit without a recurrent matrix)
        params["weight_hh"] = torch.stack(Us)
    if rnns[0].peephole is not None:
        params["peephole"] = torch.stack([u.peephole for u in rnns])
    key = tuple(id(r) for r, _ in group)
    if key not in stacks:
        # a shell lending the recurrence (unit kind and options); its own weights are replaced by `params`.
        # Eval mode: the noise is already in the weights (each unit drew its own), the stack adds none.
        stacks[key] = _stacked_unit().from_units(rnns).eval()
    h, _ = torch.func.functional_call(stacks[key], params, (x,), {"lengths": lengths})
    out, total = [], []
    for k, (r, b) in enumerate(group):
        n = int(b.lengths.sum())
        loss = r.model.nll_of_hidden(h[k, :b.inputs.shape[0], :b.inputs.shape[1]], b.targets, b.mask).sum() / n
        finite = bool(torch.isfinite(loss))
        if finite:
            total.append(loss)
        out.append((float(loss.detach()), finite, n))
    timer.lap("forward")
    if total:
        torch.stack(total).sum().backward()
    timer.lap("backward")
    return out


def finish_run(cfg: TrainConfig, ds, model: SequenceModel, state: dict, out: Path, device) -> dict:
    """Evaluate the best-validation model (out/best.pt) on every split and write result.json."""
    model.load_state_dict(load_weights(out / "best.pt", device))
    final = {s: evaluate(model, ds.splits[s], cfg.eval_batch_size, device) for s in ("train", "valid", "test")}
    result = {
        "status": str(state["status"]), "config": cfg.model_dump(), "dataset": ds.name, "kind": ds.kind,
        "unit": cfg.unit, "hidden_size": model.rnn.hidden_size, "input_size": ds.input_size,
        "recurrent_parameters": count_parameters(cfg.unit, ds.input_size, model.rnn.hidden_size,
                                                 **model.rnn.options),   # the unit as it was built
        # which loop ran the recurrence: the fused kernel or the reference (kernels.fused_path decides)
        "path": model.rnn.path(),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "epochs": state["epoch"], "best_epoch": state["best_epoch"], "updates": state["updates"],
        "skipped_updates": state.get("skipped", 0),
        "train_seconds": state["seconds"],
        "train_nll": final["train"]["nll"], "valid_nll": final["valid"]["nll"], "test_nll": final["test"]["nll"],
        "train_nll_seq": final["train"]["nll_seq"], "valid_nll_seq": final["valid"]["nll_seq"],
        "test_nll_seq": final["test"]["nll_seq"],
        # the authors' convention (see `evaluate`): per-sequence means, first step not scored
        "train_nll_seqavg": final["train"]["nll_seqavg"], "valid_nll_seqavg": final["valid"]["nll_seqavg"],
        "test_nll_seqavg": final["test"]["nll_seqavg"], "splits": final,
        "unit_of_nll": "nats per step (music: per frame, summed over the 88 notes)" if ds.kind == "music" else
                       f"nats per step (speech: summed over the {ds.target_size} predicted samples)",
        "data_files": ds.files, "data_meta": ds.meta, "environment": environment(), "device": str(device),
    }
    if is_import_path(cfg.unit):   # the code that ran: its import path, file and the file's sha256
        result["unit_source"] = source_record(cfg.unit)
    if ds.kind == "speech":  # per sample = per step / samples predicted per step (docs/SPEECH.md)
        for s in ("train", "valid", "test"):
            result[f"{s}_nll_per_sample"] = final[s]["nll"] / ds.target_size
    write_json(out / "result.json", result)
    return result


def _save_checkpoint(path: Path, cfg_json: dict, model, opt, state: dict, rng=None) -> None:
    """rng: the run's RNG stream (default: the global one). The status as a plain string: the
    weights-only loader accepts no enum."""
    atomic_torch_save({"version": CHECKPOINT_VERSION, "config": cfg_json, "model": model.state_dict(),
                       "optimizer": opt.state_dict(), "rng": torch.get_rng_state() if rng is None else rng,
                       "state": {**state, "status": str(state["status"])}}, path)


def _load_checkpoint(path: Path, ck: dict, model, opt) -> None:
    """The model's and the optimiser's state from a checkpoint read from `path`; a checkpoint that does
    not fit (shapes, entries, a damaged RNG state) raises WeightsFileError naming the file, in one line."""
    load_state(model, ck.get("model"), path)
    rng, state = ck.get("rng"), ck.get("state")
    if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.dim() == 1) \
            or not isinstance(state, dict) or not isinstance(ck.get("optimizer"), dict):
        raise WeightsFileError(f"{path}: not a complete gatedrnn checkpoint (optimizer, rng and state expected)")
    try:
        opt.load_state_dict(ck["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise WeightsFileError(f"{path}: the optimiser state does not fit the model: "
                               f"{' '.join(str(e).split())[:200]}") from None


def _write_metrics(out: Path, history: list[dict]) -> None:
    # Rewritten whole (atomically) from the checkpointed history: never a torn or duplicated line.
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def load_run(run_dir: str | Path, device="cpu") -> tuple[TrainConfig, ModelSpec, SequenceModel]:
    """(config, model spec, best-validation model in eval mode) of a run directory."""
    run = Path(run_dir)
    for name in ("config.json", "model.json", "best.pt"):
        if not (run / name).exists():
            raise FileNotFoundError(f"{run} is not a (started) run directory: {name} is missing")
    try:
        cfg = TrainConfig(**json.loads((run / "config.json").read_text()))
        spec = ModelSpec.from_json(json.loads((run / "model.json").read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{run}: config.json or model.json is not valid JSON ({e})") from None
    recorded = spec.data_dir_resolved
    if cfg.data_dir is None and resolve_data_dir(None) is None and recorded and Path(recorded).is_dir():
        cfg = cfg.model_copy(update={"data_dir": recorded})   # trained with GATEDRNN_DATA_DIR set
    model = build_model(spec).to(device)   # a unit named by import path: only if named again (nn/imported.py)
    if spec.unit_source and spec.unit_source.get("sha256"):
        now = source_record(spec.unit).get("sha256")
        if now != spec.unit_source["sha256"]:
            warnings.warn(f"{run}: the source of unit {spec.unit!r} ({spec.unit_source.get('file')}) changed since "
                          f"the run (sha256 {spec.unit_source['sha256'][:12]}… then, {str(now)[:12]}… now)",
                          RuntimeWarning, stacklevel=2)
    load_state(model, load_weights(run / "best.pt", device), run / "best.pt")
    return cfg, spec, model.eval()
