"""A unit of your own, named by import path: `--unit package.module:ClassName` (train, reproduce; analyze,
evaluate and sample rebuild it with `--import-unit`), `make_unit("package.module:ClassName", ...)`.

The contract: any `torch.nn.Module` built as `Class(input_size, hidden_size, batch_first=True)` whose
`forward` takes `(x)` — and `lengths=` where its signature has that keyword — and returns `(output, state)`
with output `(batch, time, hidden)`. `torch.nn:GRU` and `torch.nn:LSTM` are such units. `ImportedUnit`
adapts one to the package's unit API (`forward(x, state=None, lengths=None)`, `hidden_size`, weight noise,
the kernel questions answered "none"); counting.py counts an instance's parameters and matches the hidden
size to a budget with them (no formula needed).

Padding. A unit whose forward takes `lengths=` is given them. One that does not runs over the padded batch
as it is: its outputs after a sequence's end are set to 0 and never scored (the loss and every NLL read
only the valid steps, through the mask), but its state runs on through the padding (zero inputs), so the
final state it returns for a shorter sequence is not its state after its last valid step. Nothing in
training or evaluation reads that final state, except truncated back-propagation (`--tbptt`), which
carries it into the next window of the same sequences — where a finished sequence has nothing left to
score.

Weight noise (`--weight-noise`, the paper's 0.075) is added to every parameter of two or more dimensions
(the module's weight matrices), never to vectors (biases), through `torch.func.functional_call`, drawn
afresh every training forward pass like the paper units' noise on W and U.

Importing is code execution, so it happens only where whoever runs the command names the unit: `gatedrnn
train --unit`, `gatedrnn reproduce --units`, or `--import-unit` of evaluate / sample / analyze (in Python:
`allow_units(path)` or `make_unit` given the class itself). A path read from a file (config.json,
model.json, a study's store) is only a name: rebuilding or reading a run or a study never imports it, and
building such a run's model without the path given again is refused in one line (`import_unit`). The
names given reach the worker processes a study starts through the environment variable
GATEDRNN_IMPORT_UNITS (a comma-separated list; set it on remote Dask workers yourself).

The run records the import path, the file that defines the class and that file's sha256 (model.json
`unit_source`, result.json `unit_source`); rebuilding the run with a changed file warns.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import os
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..units import is_import_path   # (the form of a path: torch-free, for configs; re-exported here)
from .declaration import OptionError, check_sizes

ENV = "GATEDRNN_IMPORT_UNITS"
_allowed: set[str] = set()
_imported: dict[str, type] = {}
CONTRACT = "Class(input_size, hidden_size, batch_first=True) with forward(x) -> (output, state)"


class UnitImportError(ValueError):
    """A unit named by import path that cannot be used: not named on the command line, a module that does
    not import, a missing class, a class that breaks the contract. One line (the CLI: exit 2)."""


def allow_units(*paths: str) -> None:
    """Name units that may be imported (what the command line does for the paths it is given); also
    exported to the processes this one starts (GATEDRNN_IMPORT_UNITS)."""
    for p in paths:
        if not is_import_path(p):
            raise UnitImportError(f"{p!r} is not an import path of the form package.module:ClassName")
        _allowed.add(p)
    names = dict.fromkeys([*_env_allowed(), *sorted(_allowed)])
    os.environ[ENV] = ",".join(names)


def _env_allowed() -> list[str]:
    return [p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip()]


def allowed(path: str) -> bool:
    return path in _allowed or path in _env_allowed()


def _line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def import_unit(path: str) -> type:
    """The class named by `path` (package.module:ClassName), imported — only if named (`allow_units`) — and
    checked against the contract (a torch.nn.Module built as Class(input_size, hidden_size,
    batch_first=True) whose forward takes x). Every failure is one line (UnitImportError)."""
    if path in _imported and allowed(path):
        return _imported[path]
    if not is_import_path(path):
        raise UnitImportError(f"{path!r} is not an import path of the form package.module:ClassName")
    if not allowed(path):
        raise UnitImportError(
            f"unit {path!r} is named in a file, not on the command line, and a results folder is data: its code "
            f"is not imported unless you name it (--import-unit {path}; in Python gatedrnn.nn.allow_units)")
    module, name = path.split(":")
    try:
        mod = importlib.import_module(module)
    except BaseException as e:  # noqa: BLE001 — whatever the module raises (even SystemExit) is one line
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UnitImportError(f"unit {path!r}: module {module!r} does not import ({_line(e)})") from None
    cls = getattr(mod, name, None)
    if cls is None:
        raise UnitImportError(f"unit {path!r}: module {module!r} has no {name!r}")
    check_class(cls, path)
    _imported[path] = cls
    return cls


def check_class(cls: Any, path: str) -> None:
    """The contract's signatures: a torch.nn.Module subclass, built as Class(input_size, hidden_size,
    batch_first=True), whose forward takes x (UnitImportError otherwise)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UnitImportError(f"unit {path!r}: {cls!r} is not a torch.nn.Module class ({CONTRACT})")
    try:
        inspect.signature(cls).bind(1, 1, batch_first=True)
    except (TypeError, ValueError) as e:
        raise UnitImportError(f"unit {path!r}: {cls.__name__} cannot be built as Class(input_size, hidden_size, "
                              f"batch_first=True): {_line(e)}") from None
    try:
        inspect.signature(cls.forward).bind(None, torch.empty(0))
    except (TypeError, ValueError) as e:
        raise UnitImportError(f"unit {path!r}: {cls.__name__}.forward cannot be called as forward(x): "
                              f"{_line(e)}") from None


def source_record(path: str) -> dict:
    """{"import_path", "class", "file", "sha256"} of an imported unit: the file that defines the class and
    its sha256 (file and sha256 None where the class has no source file)."""
    cls = import_unit(path)
    try:
        file = inspect.getsourcefile(cls)
    except TypeError:
        file = None
    sha = None
    if file and os.path.isfile(file):
        with open(file, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
    return {"import_path": path, "class": f"{cls.__module__}.{cls.__qualname__}", "file": file, "sha256": sha}


def build(cls: type, path: str, input_size: int, hidden_size: int) -> nn.Module:
    """Class(input_size, hidden_size, batch_first=True); an exception while building is one line."""
    try:
        return cls(input_size, hidden_size, batch_first=True)
    except Exception as e:  # noqa: BLE001 — the user's constructor may raise anything
        raise UnitImportError(f"unit {path!r}: {cls.__name__}({input_size}, {hidden_size}, batch_first=True) "
                              f"failed ({_line(e)})") from None


def count(cls: type, path: str, input_size: int, hidden_size: int) -> int:
    """The parameters of an instance (built on the meta device where it can be: no memory, no init)."""
    try:
        with torch.device("meta"):
            m = cls(input_size, hidden_size, batch_first=True)
    except Exception:  # noqa: BLE001 — a module whose constructor needs real tensors: build it for real
        m = build(cls, path, input_size, hidden_size)
    return sum(p.numel() for p in m.parameters())


class ImportedUnit(nn.Module):
    """A unit named by import path (the module doc), with the API of the package's units:
    `ImportedUnit(path_or_class, input_size, hidden_size, batch_first=True, *, weight_noise=0.0, fused=None)`,
    `forward(x, state=None, lengths=None) -> (output, state)`. The module itself is `inner`. A state of
    torch.nn's form (num_layers = 1, batch, hidden) is handed out as (batch, hidden) and back again."""

    family = ""
    fused: bool | None = None      # every unit's switch; there is no kernel to switch

    def __init__(self, unit: str | type, input_size: int, hidden_size: int, batch_first: bool = True, *,
                 weight_noise: float = 0.0, fused: bool | None = None, **options):
        super().__init__()
        path = unit if isinstance(unit, str) else f"{unit.__module__}:{unit.__qualname__}"
        if options:
            raise OptionError(f"unit {path!r} takes no option {next(iter(options))!r} (a unit named by import "
                              f"path is built as {CONTRACT})")
        input_size, hidden_size = check_sizes(input_size, hidden_size, weight_noise)
        cls = import_unit(unit) if isinstance(unit, str) else unit
        if not isinstance(unit, str):
            check_class(cls, path)
        self.name = path
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, batch_first
        self.weight_noise, self.fused, self.options = float(weight_noise), fused, {}
        self.inner = build(cls, path, input_size, hidden_size)
        params = inspect.signature(self.inner.forward).parameters
        self._takes_lengths = "lengths" in params
        self._takes_state = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params.values()) >= 2 \
            or any(p.kind == p.VAR_POSITIONAL for p in params.values())
        self._layer_dim = False        # the module's state has torch.nn's leading layer dimension of 1

    def extra_repr(self) -> str:
        return f"{self.name!r}, {self.input_size}, {self.hidden_size}" + (
            f", weight_noise={self.weight_noise}" if self.weight_noise else "")

    # the questions the package asks every unit: no kernel, no declared gates
    def kernel_spec(self) -> None:
        return None

    def kernel_flags(self) -> dict:
        return {}

    def path(self) -> str:
        """"module": the recurrence is the module's own forward."""
        return "module"

    @contextlib.contextmanager
    def trace(self):
        """Gate tracing (gatedrnn analyze): a module of one's own reports no gates."""
        yield []

    def dtype(self) -> torch.dtype:
        return next((p.dtype for p in self.parameters()), torch.get_default_dtype())

    # ------------------------------------------------------------------ state
    def _to_inner(self, state):
        if isinstance(state, (tuple, list)):
            return type(state)(self._to_inner(s) for s in state)
        return state.unsqueeze(0) if self._layer_dim and isinstance(state, Tensor) and state.dim() == 2 else state

    def _from_inner(self, state, B: int):
        if isinstance(state, (tuple, list)):
            return tuple(self._from_inner(s, B) for s in state)
        if isinstance(state, Tensor) and state.dim() == 3 and state.shape[0] == 1 and state.shape[1] == B:
            self._layer_dim = True
            return state[0]
        return state

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None):
        if isinstance(x, PackedSequence):
            raise ValueError(f"unit {self.name!r}: pass a padded batch and lengths, not a PackedSequence")
        if x.dim() != 3:
            raise ValueError(f"expected a 3-d input (batch, time, features), got shape {tuple(x.shape)}")
        xb = x if self.batch_first else x.transpose(0, 1)
        B, T, I = xb.shape
        if I != self.input_size:
            raise ValueError(f"input has {I} features, the unit expects input_size={self.input_size}")
        args: tuple = (xb,)
        if state is not None:
            if not self._takes_state:
                raise ValueError(f"unit {self.name!r}: its forward takes no initial state, which truncated "
                                 f"back-propagation (--tbptt), sampling and the gradient-flow analysis pass")
            args = (xb, self._to_inner(state))
        kw = {}
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
            if lengths.shape != (B,) or int(lengths.max()) > T or int(lengths.min()) < 0:
                raise ValueError(f"lengths must have shape ({B},) with values in [0, {T}], got {lengths.tolist()}")
            if self._takes_lengths:
                kw["lengths"] = lengths
            if int(lengths.min()) < T:
                mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(xb.device)    # (B, T)
        if self.training and self.weight_noise > 0:
            noisy = {n: p + self.weight_noise * torch.randn_like(p) if p.dim() >= 2 else p
                     for n, p in self.inner.named_parameters()}
            res = torch.func.functional_call(self.inner, noisy, args, kw)
        else:
            res = self.inner(*args, **kw)
        out, new = self._checked(res, B, T)
        if mask is not None:   # outputs after a sequence's end: 0, as every unit's (and never scored)
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return (out if self.batch_first else out.transpose(0, 1)), self._from_inner(new, B)

    def _checked(self, res, B: int, T: int):
        want = (B, T, self.hidden_size)
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            got = f"a {type(res).__name__}" + (f" of length {len(res)}" if isinstance(res, (tuple, list)) else "")
            raise UnitImportError(f"unit {self.name!r}: forward must return (output, state), got {got}")
        out = res[0]
        if not isinstance(out, Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise UnitImportError(f"unit {self.name!r}: forward's output must be (batch, time, hidden) = {want}, "
                                  f"got {got}")
        return out, res[1]


def check_unit(path: str, input_size: int = 4, hidden_size: int = 3) -> None:
    """Import `path` (it must be named: `allow_units`), build it and run one forward on a small padded batch
    (batch 2, 5 steps): its signatures and the shape of its output, each failure one line. The global RNG
    is left as it was."""
    with torch.random.fork_rng(devices=[]):
        u = ImportedUnit(path, input_size, hidden_size)
        with torch.no_grad():
            u(torch.zeros(2, 5, input_size, dtype=u.dtype()), lengths=torch.tensor([5, 3]))
