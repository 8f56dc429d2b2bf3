"""What every command of the command line shares: the flags generated from a pydantic config (name, type,
default and help from each field) and ONE set of argparse validators."""
from __future__ import annotations

import argparse
import math
import types
import typing

# ------------------------------------------------------------------------------ validators
# One set for every command: they check what a config field declares (type, bounds, finiteness) and say
# it in one line; the config model then validates again (cross-field rules).
def number(kind: type, lo=None, lo_open=False, hi=None, hi_open=False, *, zero=False):
    """An argparse type: an int or a finite float within the bounds; zero=True also accepts 0 (a flag
    whose 0 means "none")."""
    if zero and lo == 0 and lo_open:    # "0 or > 0" is ">= 0"
        zero, lo_open = False, False
    want = ("an integer" if kind is int else "a finite number")
    bounds = [f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else None,
              f"{'<' if hi_open else '<='} {hi:g}" if hi is not None else None]
    want += " " + " and ".join(b for b in bounds if b) if any(bounds) else ""
    want = f"0 or {want}" if zero else want

    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}") from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}")
        if zero and v == 0:
            return v
        if (lo is not None and (v <= lo if lo_open else v < lo)) or \
                (hi is not None and (v >= hi if hi_open else v > hi)):
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}")
        return v
    parse.__name__ = kind.__name__   # argparse names the type in its messages
    return parse


positive_int = number(int, 0, True)
nonneg_int = number(int, 0)
finite_float = number(float)


def csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def unit_choice(s: str) -> str:
    """--unit: a registered unit name or package.module:ClassName (checked for its form; imported later,
    because it is named here)."""
    from ..train import UNIT_NAMES, canonical_unit   # (the registry's; nothing is imported for an import path)
    try:
        return canonical_unit(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid choice: {s!r} (choose from {', '.join(UNIT_NAMES)}, or "
                                         f"package.module:ClassName)") from None


# --------------------------------------------------------------------------- flags from a config
def _field_type(field, zero_is_none: bool = False) -> dict:
    """(argparse keyword arguments) for a pydantic field: choices, booleans, bounded numbers."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) in (
        typing.Union, types.UnionType) else [ann]
    base = args[0] if len(args) == 1 else ann
    if typing.get_origin(base) is typing.Literal:
        return {"choices": list(typing.get_args(base))}
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if base in (int, float):
        b = {}
        for m in field.metadata:
            for k in ("gt", "ge", "lt", "le"):
                if getattr(m, k, None) is not None:
                    b[k] = getattr(m, k)
        lo, lo_open = (b["gt"], True) if "gt" in b else (b.get("ge"), False)
        hi, hi_open = (b["lt"], True) if "lt" in b else (b.get("le"), False)
        return {"type": number(base, lo, lo_open, hi, hi_open, zero=zero_is_none and field.default is None)}
    return {"type": str}


def _shown(value) -> str:
    return "none" if value is None else ("on" if value is True else "off" if value is False else str(value))


def add_config_flags(p, model, fields=None, *, rename=None, metavars=None, default_from=None,
                     keep_defaults=False, required=(), types=None) -> None:
    """Add one --flag per field of a pydantic model (type, bounds, choices, help and default from the
    field itself), all defaulting to None so that 'not given' is distinguishable from a value
    (keep_defaults=True: to the field's default, for a command that uses the fields without the model).

    default_from="the budget": the flags override a preset (gatedrnn reproduce): the help says where the
    default comes from, and 0 is accepted for a field whose default is None, to set it back to none.
    required: fields the command needs given (its help says so instead of the model's default; the
    command checks, since a --config file may give them too).
    types: {field: argparse type} for a field whose values are not a choice of a Literal (--unit)."""
    rename, metavars, types = rename or {}, metavars or {}, types or {}
    for name, field in model.model_fields.items():
        if fields is not None and name not in fields:
            continue
        kw = {"type": types[name]} if name in types else _field_type(field, zero_is_none=default_from is not None)
        if name in required:
            default = "required"
        elif default_from is None:
            default = f"default {_shown(field.default)}"
        else:
            default = f"default: {default_from}'s, else {_shown(field.default)}" + (
                f"; 0: none, overriding {default_from}" if field.default is None and "type" in kw else "")
        kw["help"] = f"{field.description or name} ({default})".replace("%", "%%")
        if name in metavars:
            kw["metavar"] = metavars[name]
        p.add_argument("--" + rename.get(name, name).replace("_", "-"), dest=name,
                       default=field.default if keep_defaults else None, **kw)


# Flag names that differ from their TrainConfig field (train and reproduce)
TRAIN_RENAME = {"data_format": "format"}


def config_from_args(args, model, fields=None) -> dict:
    """The fields given on the command line (not None)."""
    names = model.model_fields if fields is None else fields
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
