"""The unit registry: every unit name -> its class (the paper's three, the ablation variants, then the
minimal units of 2024), built from the torch-free list of them, gatedrnn.units (which also answers
`unit_names`, `canonical_unit` and `unit_family` without torch; re-exported here); what a unit takes is its
declaration's (declaration.py). A unit may also be named by import path, package.module:ClassName
(imported.py: imported only where named on the command line). See the package doc
(gatedrnn/nn/__init__.py)."""
from __future__ import annotations

import importlib

from ..units import MIN_UNITS, PAPER_UNITS, BUILTIN_UNITS, canonical_unit, unit_names
from ..units import unit_family as _family
from .base import RecurrentUnit
from .declaration import OptionError
from .imported import ImportedUnit, import_unit, is_import_path

__all__ = ["MIN_UNITS", "PAPER_UNITS", "UNITS", "canonical_unit", "unit_names", "unit_class", "unit_family",
           "unit_options", "make_unit"]


def _builtin_class(where: str) -> type[RecurrentUnit]:
    module, name = where.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


UNITS: dict[str, type[RecurrentUnit]] = {name: _builtin_class(b.where) for name, b in BUILTIN_UNITS.items()}


def unit_class(unit: str | type) -> type:
    """The class of the unit called `unit` (case-insensitive; see `unit_names()`); a class is its own; an
    import path is imported if it was named (imported.import_unit)."""
    if isinstance(unit, type):
        return unit
    if is_import_path(unit):
        return import_unit(unit)
    key = unit.lower() if isinstance(unit, str) else None
    if key not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; expected one of: {', '.join(UNITS)}")
    return UNITS[key]


def unit_family(unit: str | type) -> str:
    """The paper unit `unit` is (or modifies): gatedrnn.units.unit_family for a name (no torch needed); a
    unit class's own `family`, else its `name`."""
    if isinstance(unit, type):
        return unit.family or unit.name
    return _family(unit)


def unit_options(unit: str | type, **given) -> dict:
    """The options `unit` is built with: every option it declares, its default updated by `given`.
    An option it does not take, or a value it refuses, raises OptionError (a ValueError and a TypeError)
    naming the unit and what it takes (a variant's other forms are units of their own: the message lists
    its family's)."""
    if is_import_path(unit):   # built as Class(input_size, hidden_size, batch_first=True): nothing to import
        for k in given:
            raise OptionError(f"unit {unit!r} takes no option {k!r} (a unit named by import path is built as "
                              f"Class(input_size, hidden_size, batch_first=True))")
        return {}
    cls = unit_class(unit)
    if getattr(cls, "declares", None) is None:   # a class that declares nothing checks its keywords itself
        return dict(given)
    try:
        return cls.resolve_options(**given)
    except OptionError as e:
        unknown = [k for k in given if k not in cls.declares.options]
        if not unknown or not cls.family:
            raise
        others = [n for n, c in UNITS.items() if n != cls.name and unit_family(n) == cls.family]
        raise OptionError(f"{e}; the other forms of the {cls.family} family are units of their own: "
                          f"{', '.join(others)}") from None


def make_unit(name: str | type, input_size: int, hidden_size: int, **kw) -> RecurrentUnit | ImportedUnit:
    """Build the unit called `name` (case-insensitive; see `unit_names()`). `kw`: batch_first,
    weight_noise, fused, and the unit's own options (its declaration's, e.g. forget_bias for the LSTM
    family). An import path (package.module:ClassName, imported only if named: imported.allow_units) or a
    torch.nn.Module class of one's own is built as Class(input_size, hidden_size, batch_first=True) and
    adapted (imported.ImportedUnit)."""
    cls = unit_class(name)
    if isinstance(cls, type) and issubclass(cls, RecurrentUnit):
        return cls(input_size, hidden_size, **kw)
    return ImportedUnit(name if isinstance(name, str) else cls, input_size, hidden_size, **kw)
