"""Fused forward/backward kernels behind one small interface.

`lookup(unit)` returns a callable `fn(unit, xt, state, mask, W, U) -> (out, state)` computing exactly
what `unit.reference(...)` computes, or None when no fast path applies (then the reference loop runs).
"""
from __future__ import annotations


def lookup(unit):
    return None
