"""The paper's three recurrent units and the component-ablation variants. Each has the same small API
(haste-style): `Unit(input_size, hidden_size, batch_first=True, ...)`, `forward(x, state=None,
lengths=None) -> (output, state)`, and `paper_weights()` naming its parameters by the paper's symbols.

Each unit class declares itself once (`declares = Declaration(...)`, declaration.py: gate blocks,
peepholes, extra matrices, the options it takes, its fused kernel and flags); counting, size matching,
the kernel flags and the options `gatedrnn train` passes all derive from it.

Registry: `UNITS` maps every name to its class (built from the torch-free list of names and families,
gatedrnn/units.py, which also answers the next three without torch), `unit_names()` lists them (the
paper's three first), `unit_family(name)` gives the paper unit a name modifies ("tanh", "gru", "lstm"; mgu
counts as "gru"), `unit_options(name, **given)` the options it is built with (refusing those it does not take),
`make_unit(name, ...)` builds one (registry.py). Variants: lstm_variants.py, gru_variants.py,
docs/VARIANTS.md. The minimal units of Feng et al. 2024 (no recurrent matrix, a linear scan): mingru.py,
minlstm.py, scan.py. A unit of one's own by import path, package.module:ClassName: imported.py.

The loop over time: `recurrence(unit, xt, state, mask, W, U, b, v)` (base.py), for one model or K stacked
on a leading dimension; `StackedUnit` (stacked.py) holds K units of one kind as stacked parameters.
"""
from .base import RecurrentUnit, recurrence
from .declaration import Declaration, OptionError
from .gru import GRU
from .gru_variants import MGU
from .imported import ImportedUnit, UnitImportError, allow_units, is_import_path
from .lstm import LSTM
from .mingru import MinGRU
from .minlstm import MinLSTM
from .registry import (MIN_UNITS, PAPER_UNITS, UNITS, canonical_unit, make_unit, unit_class, unit_family, unit_names,
                       unit_options)
from .stacked import StackedUnit
from .tanh import TanhRNN
from .variant import Variant

__all__ = ["RecurrentUnit", "Declaration", "OptionError", "TanhRNN", "GRU", "LSTM", "MGU", "Variant", "UNITS",
           "PAPER_UNITS", "unit_names", "unit_family", "unit_class", "unit_options", "make_unit", "recurrence",
           "StackedUnit", "MinGRU", "MinLSTM", "MIN_UNITS", "canonical_unit", "ImportedUnit", "UnitImportError",
           "allow_units", "is_import_path"]
