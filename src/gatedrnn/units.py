"""The built-in units by name, without torch: what each is called, which paper unit it belongs to, and
where its class lives. The one list of them (adding a unit is one entry in `BUILTIN_UNITS`).

A config, a study's grid and its tables name units and group them by family; none of that needs a unit's
equations, so none of it imports torch. The classes (gatedrnn.nn) take their `name` and `family` from this
table when they are defined (`RecurrentUnit.__init_subclass__`), and the registry (nn/registry.py) builds
`UNITS`, name -> class, from it. A unit of one's own named by import path, package.module:ClassName, is
checked here for its form only: nothing is imported (nn/imported.py imports it where a command names it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Builtin:
    """A built-in unit: `where` its class is, module (of gatedrnn.nn) : class name; `family`, the paper unit
    it modifies ("lstm", "gru"), or "" for a unit that modifies none (the paper's three, the minimal units)."""
    where: str
    family: str = ""


# Every built-in unit, in the order unit_names() lists them: the paper's three, the component ablations
# (docs/VARIANTS.md), the minimal units of Feng et al. 2024
BUILTIN_UNITS: dict[str, Builtin] = {
    "tanh": Builtin("tanh:TanhRNN"),
    "gru": Builtin("gru:GRU"),
    "lstm": Builtin("lstm:LSTM"),
    "lstm-nig": Builtin("lstm_variants:LSTMNoInputGate", "lstm"),
    "lstm-nfg": Builtin("lstm_variants:LSTMNoForgetGate", "lstm"),
    "lstm-nog": Builtin("lstm_variants:LSTMNoOutputGate", "lstm"),
    "lstm-niaf": Builtin("lstm_variants:LSTMNoInputActivation", "lstm"),
    "lstm-noaf": Builtin("lstm_variants:LSTMNoOutputActivation", "lstm"),
    "lstm-np": Builtin("lstm_variants:LSTMNoPeepholes", "lstm"),
    "lstm-cifg": Builtin("lstm_variants:LSTMCoupledGates", "lstm"),
    "lstm-fgr": Builtin("lstm_variants:LSTMFullGateRecurrence", "lstm"),
    "lstm-fb1": Builtin("lstm_variants:LSTMForgetBias1", "lstm"),
    "gru-nrg": Builtin("gru_variants:GRUNoResetGate", "gru"),
    "gru-nug": Builtin("gru_variants:GRUNoUpdateGate", "gru"),
    "gru-ra": Builtin("gru_variants:GRUResetAfter", "gru"),
    "mgu": Builtin("gru_variants:MGU", "gru"),
    "mingru": Builtin("mingru:MinGRU"),
    "minlstm": Builtin("minlstm:MinLSTM"),
}
PAPER_UNITS: tuple[str, ...] = ("tanh", "gru", "lstm")
MIN_UNITS: tuple[str, ...] = ("mingru", "minlstm")     # Feng et al. 2024: no recurrent matrix, a linear scan
# module:class of gatedrnn.nn -> its name, for the classes to find theirs
_BY_CLASS = {f"gatedrnn.nn.{b.where}": name for name, b in BUILTIN_UNITS.items()}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"^{_NAME}(\.{_NAME})*:{_NAME}$")


def is_import_path(unit: Any) -> bool:
    """Is `unit` written as an import path, package.module:ClassName? (Syntax only: nothing is imported.)"""
    return isinstance(unit, str) and bool(_PATH.match(unit))


def unit_names() -> list[str]:
    """Every valid unit name: the paper's three, the LSTM variants, the GRU variants, the minimal units.
    (Any package.module:ClassName is a unit too: `canonical_unit`.)"""
    return list(BUILTIN_UNITS)


def canonical_unit(unit: str) -> str:
    """The name a config records for `unit`: a registered name in lower case, or an import path as written
    (checked for its form only: nothing is imported). ValueError for anything else."""
    if isinstance(unit, str) and unit.lower() in BUILTIN_UNITS:
        return unit.lower()
    if is_import_path(unit):
        return unit
    raise ValueError(f"unknown unit {unit!r}; expected one of: {', '.join(BUILTIN_UNITS)}, or "
                     f"package.module:ClassName (a torch.nn.Module of your own)")


def unit_family(name: str) -> str:
    """The paper unit `name` is (or modifies): "tanh", "gru" or "lstm"; a unit that modifies none is its own
    family (the minimal units; a unit named by import path, which is not imported to answer this). LSTM-family
    units carry an (h, c, …) state; the options each takes are its declaration's (nn.unit_options)."""
    if is_import_path(name):
        return name
    key = name.lower() if isinstance(name, str) else None
    if key not in BUILTIN_UNITS:
        raise ValueError(f"unknown unit {name!r}; expected one of: {', '.join(BUILTIN_UNITS)}")
    return BUILTIN_UNITS[key].family or key


def registered_name(module: str, qualname: str) -> tuple[str, str] | None:
    """(name, family) of the built-in unit whose class is `module`.`qualname`, or None for any other class."""
    name = _BY_CLASS.get(f"{module}:{qualname}")
    return None if name is None else (name, BUILTIN_UNITS[name].family)
