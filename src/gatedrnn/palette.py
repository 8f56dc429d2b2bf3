"""The units' colours, shared by the figures of trained models (analysis.py) and of a study (study/report.py):
plain constants at the bottom layer, so drawing a study's report needs no torch."""
from __future__ import annotations

from typing import Sequence

UNIT_COLORS = {"tanh": "#d62728", "gru": "#1f77b4", "lstm": "#2ca02c"}
# the rest of matplotlib's tab10 cycle, for units beyond the paper's three (ablation variants)
OTHER_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def unit_color(unit: str, units: Sequence[str]) -> str:
    """The paper's units keep their colours; any other unit takes the next colour of OTHER_COLORS in the
    order of `units` (the study's, or a figure's), so no two units of a figure share one."""
    if unit in UNIT_COLORS:
        return UNIT_COLORS[unit]
    others = [u for u in units if u not in UNIT_COLORS]
    return OTHER_COLORS[others.index(unit) % len(OTHER_COLORS)] if unit in others else OTHER_COLORS[4]
