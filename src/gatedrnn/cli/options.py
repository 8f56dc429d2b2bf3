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
    zero_is_none = zero
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
    parse.zero_is_none = zero_is_none     # add_config_flags' help says so
    return parse


positive_int = number(int, 0, True)
nonneg_int = number(int, 0)
finite_float = number(float)


def csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def unit_choice(s: str) -> str:
    """--unit: a registered unit name or package.module:ClassName (checked for its form; imported later,
    because it is named here)."""
    from ..units import canonical_unit, unit_names   # (torch-free; nothing is imported for an import path)
    try:
        return canonical_unit(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid choice: {s!r} (choose from {', '.join(unit_names())}, or "
                                         f"package.module:ClassName)") from None


# --------------------------------------------------------------------------- flags from a config
def csv_of(parse, what: str):
    """An argparse type: comma-separated values, each read by `parse` (a list field: --halving-rungs 2,4)."""
    def read(s: str) -> list:
        try:
            out = [parse(x) for x in csv(s)]
        except (ValueError, argparse.ArgumentTypeError):
            out = []
        if not out:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {s!r}")
        return out
    return read


def _field_type(field, zero_is_none: bool = False) -> dict:
    """(argparse keyword arguments) for a pydantic field: choices, booleans, bounded numbers, lists."""
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
    if typing.get_origin(base) is list:
        item, = typing.get_args(base) or (str,)
        if item in (int, float):
            return {"type": csv_of(number(item), "integers" if item is int else "finite numbers")}
        return {"type": csv}
    return {"type": str}


def _default(field):
    return field.get_default(call_default_factory=True)


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "none" if value is None else ("on" if value is True else "off" if value is False else str(value))


def _flags(model, fields, rename) -> dict[str, list[str]]:
    """flag name -> the fields it sets: one field each, except fields that declare one flag together
    (utils.role(flag=...): lr_low and lr_high are --lr-range LOW HIGH)."""
    out: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        if fields is None or name in fields:
            out.setdefault((field.json_schema_extra or {}).get("flag") or rename.get(name, name), []).append(name)
    return out


def add_config_flags(p, model, fields=None, *, rename=None, metavars=None, default_from=None,
                     keep_defaults=False, required=(), types=None) -> None:
    """Add one --flag per field of a pydantic model (type, bounds, choices, help and default from the
    field itself), all defaulting to None so that 'not given' is distinguishable from a value
    (keep_defaults=True: to the field's default, for a command that uses the fields without the model).
    Fields that declare one flag together (utils.role(flag="lr_range")) are one flag taking one value per
    field (--lr-range LOW HIGH; config_from_args splits it).

    default_from="the budget": the flags override a preset (gatedrnn reproduce): the help says where the
    default comes from, and 0 is accepted for a number field whose default is None, to set it back to none
    (config_from_args(zero_is_none=True) reads it so).
    required: fields the command needs given (its help says so instead of the model's default; the
    command checks, since a --config file may give them too).
    types: {field: argparse type} for a field whose values are not a choice of a Literal (--unit)."""
    rename, metavars, types = rename or {}, metavars or {}, types or {}
    for flag, names in _flags(model, fields, rename).items():
        name, field = names[0], model.model_fields[names[0]]
        kw = {"type": types[name]} if name in types else _field_type(field, zero_is_none=default_from is not None)
        shown = " ".join(_shown(_default(model.model_fields[n])) for n in names)
        if name in required:
            default = "required"
        elif default_from is None:
            default = f"default {shown}"
        else:
            default = f"default: {default_from}'s, else {shown}" + (
                f"; 0: none, overriding {default_from}" if getattr(kw.get("type"), "zero_is_none", False) else "")
        kw["help"] = f"{field.description or name} ({default})".replace("%", "%%")
        if len(names) > 1:
            kw.update(nargs=len(names), metavar=tuple(n.rsplit("_", 1)[-1].upper() for n in names))
        if name in metavars:
            kw["metavar"] = metavars[name]
        p.add_argument("--" + flag.replace("_", "-"), dest=flag if len(names) > 1 else name,
                       default=_default(field) if keep_defaults and len(names) == 1 else None, **kw)


# Flag names that differ from their TrainConfig field (train and reproduce)
TRAIN_RENAME = {"data_format": "format"}


def config_from_args(args, model, fields=None, *, zero_is_none: bool = False) -> dict:
    """The fields given on the command line (not None); a flag of several fields gives each its value.
    zero_is_none: a 0 given for a field whose default is None is None (add_config_flags' default_from)."""
    out = {}
    for flag, names in _flags(model, fields, {}).items():
        value = getattr(args, flag if len(names) > 1 else names[0], None)
        if value is not None:
            out.update(zip(names, value) if len(names) > 1 else [(names[0], value)])
    if zero_is_none:
        out = {k: None if type(v) in (int, float) and v == 0 and model.model_fields[k].default is None else v
               for k, v in out.items()}
    return out
