"""Parameter counting with the paper's convention (Table 1).

Recurrent layer only (the output layer is excluded), one bias vector per gate/candidate, diagonal
peepholes (3 vectors) for the LSTM:
    tanh  I·n + n² + n
    GRU   3(I·n + n²) + 3n
    LSTM  4(I·n + n²) + 4n + 3n
This reproduces all six Table 1 counts with input size 20 for speech and a nominal input size of 100
for music (no input size of 88 or 93-108 fits all three music rows; see docs/PAPER notes).

Every unit follows the same convention, read from its declaration (declaration.py): G blocks (gates +
candidate) of W (n×I), U (n×n) and b (n), P peephole vectors and S extra n×n blocks (lstm-fgr's
gate-to-gate R): G(I·n + n²) + G·n + P·n + S·n² — exactly the parameters the module holds; a unit without
a recurrent matrix (minGRU, minLSTM) has no U: G·I·n + G·n. A unit class that declares nothing (any torch
module built as `Class(input_size, hidden_size, batch_first=True)`, e.g. named by import path) is counted
by building one (on the meta device where it can) and counting its parameters, and matched to a budget by
a search over such counts; one that never comes near the budget is refused in one line.
"""
from __future__ import annotations

from . import imported
from .declaration import check_sizes
from .registry import UNITS, unit_class, unit_options

# (task, unit) -> (units, the paper's printed count in thousands)
TABLE1 = {
    ("music", "lstm"): (36, 19.8), ("music", "gru"): (46, 20.2), ("music", "tanh"): (100, 20.1),
    ("speech", "lstm"): (195, 169.1), ("speech", "gru"): (227, 168.9), ("speech", "tanh"): (400, 168.4),
}
# The input sizes that reproduce Table 1 (music: nominal, see module docstring).
TABLE1_INPUT = {"music": 100, "speech": 20}
# Parameter budgets: the count of the paper's tanh reference model (100 units for music, 400 for
# speech). Matching each gated unit to the closest count gives back all of Table 1's sizes.
BUDGET = {"music": 20_100, "speech": 168_400}


# unit name -> (G blocks of W, U, b; P peephole vectors; S extra n×n blocks), from the declarations
SHAPES: dict[str, tuple[int, int, int]] = {name: cls.declares.shape for name, cls in UNITS.items()}


def count_parameters(unit: str | type, input_size: int, hidden_size: int, *, peepholes: bool = True,
                     **options) -> int:
    """Recurrent-layer parameter count of `unit` (any name of `gatedrnn.nn.unit_names()`, or a unit class)
    with the paper's convention, built with its `options` (those it declares, e.g. the LSTM's
    peepholes=False, which drops its three peephole vectors). `peepholes=True` is every unit's default and
    passes nothing; peepholes=False to a unit that does not take it is refused (OptionError, a ValueError)."""
    I, n = check_sizes(input_size, hidden_size)
    if not peepholes:
        options["peepholes"] = False
    cls = unit_class(unit)
    options = unit_options(unit if imported.is_import_path(unit) else cls, **options)
    if getattr(cls, "declares", None) is None:    # no declaration: count an instance
        if options:
            return sum(p.numel() for p in cls(I, n, **options).parameters())
        return imported.count(cls, _name(unit, cls), I, n)
    return cls.declares.with_options(options).count(I, n)


def _name(unit, cls) -> str:
    return unit if isinstance(unit, str) else f"{cls.__module__}:{cls.__qualname__}"


# A unit counted by instances: the hidden sizes searched (at most), and how far from the budget its closest
# count may be (the declared units, matched by their formula, are within 1.6 % of Table 1's budgets)
MAX_HIDDEN = 1 << 16
MATCH_TOLERANCE = 0.10


def match_hidden_size(unit: str | type, input_size: int, budget: int, *, peepholes: bool = True,
                      **options) -> int:
    """The hidden size whose parameter count is closest to `budget` (ties: the smaller size).
    Any unit and options of `count_parameters`."""
    if int(budget) <= 0:
        raise ValueError(f"budget must be a positive number of parameters, got {budget}")
    cls = unit_class(unit)
    if getattr(cls, "declares", None) is None:
        return _match_by_instances(unit, cls, input_size, int(budget), peepholes, options)
    best, best_err, n = 1, None, 1
    while True:
        c = count_parameters(unit, input_size, n, peepholes=peepholes, **options)
        err = abs(c - budget)
        if best_err is None or err < best_err:
            best, best_err = n, err
        if c > budget:
            return best
        n += 1


def _match_by_instances(unit, cls, input_size: int, budget: int, peepholes: bool, options: dict) -> int:
    """match_hidden_size for a unit counted by instances: doubling, then bisection for the first size above
    the budget (counts grow with the size), the closer of it and the one below (ties: the smaller).
    UnitImportError (a ValueError, one line) when no size up to MAX_HIDDEN exceeds the budget or the closest
    count is more than MATCH_TOLERANCE away from it."""
    name = _name(unit, cls)
    count = lambda n: count_parameters(unit, input_size, n, peepholes=peepholes, **options)   # noqa: E731
    hi = 1
    while count(hi) <= budget:
        if hi >= MAX_HIDDEN:
            raise imported.UnitImportError(
                f"unit {name!r} never matches the budget of {budget:,} parameters: hidden size {hi:,} has "
                f"{count(hi):,} (its parameters do not grow with hidden_size?)")
        hi *= 2
    lo = hi // 2                        # count(lo) <= budget (or lo = 0); count(hi) > budget
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid)
    best = min((n for n in (hi - 1, hi) if n >= 1), key=lambda n: (abs(count(n) - budget), n))
    if abs(count(best) - budget) > MATCH_TOLERANCE * budget:
        raise imported.UnitImportError(
            f"unit {name!r} cannot be matched to the budget of {budget:,} parameters: the closest hidden size, "
            f"{best:,}, has {count(best):,} (more than {MATCH_TOLERANCE:.0%} away)")
    return best


def table1_rows() -> list[dict]:
    """Table 1 with our counts beside the paper's. `agrees`: our count, rounded to the paper's
    precision (0.1k), is within one unit of the last printed digit."""
    rows = []
    for (task, unit), (n_paper, k_paper) in TABLE1.items():
        I = TABLE1_INPUT[task]
        n = match_hidden_size(unit, I, BUDGET[task])
        count = count_parameters(unit, I, n)
        rows.append({"task": task, "unit": unit, "input_size": I, "units": n, "units_paper": n_paper,
                     "parameters": count, "paper_k": k_paper, "ours_k": round(count / 1000, 1),
                     "agrees": n == n_paper and abs(count / 1000 - k_paper) < 0.1 + 1e-9})
    return rows
