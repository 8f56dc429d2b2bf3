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
gate-to-gate R): G(I·n + n²) + G·n + P·n + S·n² — exactly the parameters the module holds. A unit class
that declares nothing (any torch module built as `Class(input_size, hidden_size, ...)`) is counted by
building one and counting its parameters.
"""
from __future__ import annotations

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
    I, n = int(input_size), int(hidden_size)
    if I <= 0 or n <= 0:
        raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
    if not peepholes:
        options["peepholes"] = False
    cls = unit_class(unit)
    options = unit_options(cls, **options)
    if getattr(cls, "declares", None) is None:    # no declaration: count an instance
        return sum(p.numel() for p in cls(I, n, **options).parameters())
    return cls.declares.with_options(options).count(I, n)


def match_hidden_size(unit: str | type, input_size: int, budget: int, *, peepholes: bool = True,
                      **options) -> int:
    """The hidden size whose parameter count is closest to `budget` (ties: the smaller size).
    Any unit and options of `count_parameters`."""
    if int(budget) <= 0:
        raise ValueError(f"budget must be a positive number of parameters, got {budget}")
    best, best_err, n = 1, None, 1
    while True:
        c = count_parameters(unit, input_size, n, peepholes=peepholes, **options)
        err = abs(c - budget)
        if best_err is None or err < best_err:
            best, best_err = n, err
        if c > budget:
            return best
        n += 1


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
