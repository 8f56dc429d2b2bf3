"""Parameter counting with the paper's convention (Table 1).

Recurrent layer only (the output layer is excluded), one bias vector per gate/candidate, diagonal
peepholes (3 vectors) for the LSTM:
    tanh  I·n + n² + n
    GRU   3(I·n + n²) + 3n
    LSTM  4(I·n + n²) + 4n + 3n
This reproduces all six Table 1 counts with input size 20 for speech and a nominal input size of 100
for music (no input size of 88 or 93-108 fits all three music rows; see docs/PAPER notes).

The ablation variants (nn/lstm_variants.py, nn/gru_variants.py; docs/VARIANTS.md) follow the same
convention. Every unit is G blocks (gates + candidate) of W (n×I), U (n×n) and b (n), P peephole vectors
and S extra n×n matrices (lstm-fgr's gate-to-gate R): G(I·n + n²) + G·n + P·n + S·n².
"""
from __future__ import annotations

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


# unit name -> (G blocks of W, U, b; P peephole vectors; S extra n×n matrices)
SHAPES: dict[str, tuple[int, int, int]] = {
    "tanh": (1, 0, 0), "gru": (3, 0, 0), "lstm": (4, 3, 0),
    # LSTM ablations (Greff et al. 2015) on the paper's peephole LSTM
    "lstm-nig": (3, 2, 0), "lstm-nfg": (3, 2, 0), "lstm-nog": (3, 2, 0),
    "lstm-niaf": (4, 3, 0), "lstm-noaf": (4, 3, 0), "lstm-np": (4, 0, 0),
    "lstm-cifg": (3, 2, 0), "lstm-fgr": (4, 3, 9), "lstm-fb1": (4, 3, 0),
    # GRU ablations, and the minimal gated unit (Zhou et al. 2016)
    "gru-nrg": (2, 0, 0), "gru-nug": (2, 0, 0), "gru-ra": (3, 0, 0), "mgu": (2, 0, 0),
}


def count_parameters(unit: str, input_size: int, hidden_size: int, *, peepholes: bool = True) -> int:
    """Recurrent-layer parameter count of `unit` (any name of `gatedrnn.nn.unit_names()`) with the
    paper's convention. `peepholes=False` drops the LSTM's three peephole vectors ("lstm" only; the
    variants fix their own peepholes — "lstm-np" has none — and GRU-family units have none)."""
    I, n = int(input_size), int(hidden_size)
    if I <= 0 or n <= 0:
        raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
    u = unit.lower()
    if u not in SHAPES:
        raise ValueError(f"unknown unit {unit!r}; expected one of {sorted(SHAPES)}")
    G, P, S = SHAPES[u]
    if not peepholes and P:
        if u != "lstm":
            raise ValueError(f"{unit!r} fixes its own peepholes; peepholes=False applies to 'lstm' only "
                             "(the peephole-free variant is 'lstm-np')")
        P = 0
    return G * (I * n + n * n) + G * n + P * n + S * n * n


def match_hidden_size(unit: str, input_size: int, budget: int, *, peepholes: bool = True) -> int:
    """The hidden size whose parameter count is closest to `budget` (ties: the smaller size).
    Any unit name of `count_parameters`."""
    if int(budget) <= 0:
        raise ValueError(f"budget must be a positive number of parameters, got {budget}")
    best, best_err, n = 1, None, 1
    while True:
        c = count_parameters(unit, input_size, n, peepholes=peepholes)
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
