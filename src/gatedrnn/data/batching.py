"""Mini-batches of variable-length sequences with length bucketing.

Sequences are sorted by length (ties broken by a seeded random key), cut into consecutive chunks of
``batch_size`` and, when shuffling, the order of those chunks is shuffled. Neighbours in the sorted
order have similar lengths, so zero padding stays small. All randomness comes from a local numpy
Generator seeded with (seed, epoch): the batches of epoch k are the same whether or not the run was
interrupted and resumed. Every sequence appears exactly once per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

__all__ = ["Batch", "iterate_batches", "batch_order", "collate", "padding_fraction"]


@dataclass
class Batch:
    inputs: torch.Tensor   # (B, T, I) float32, zero-padded
    targets: torch.Tensor  # (B, T, D) float32, zero-padded
    lengths: torch.Tensor  # (B,) int64, always on the CPU
    mask: torch.Tensor     # (B, T) bool, True on real steps
    index: list[int]       # positions of these sequences in the split

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """Move inputs/targets/mask to ``device``; lengths stay on the CPU (pack_padded_sequence wants them there)."""
        return Batch(self.inputs.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking),
                     self.lengths, self.mask.to(device, non_blocking=non_blocking), list(self.index))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def steps(self) -> int:
        return int(self.lengths.sum())


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF,
                                                         0x6A7EB]))


def batch_order(lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0,
                epoch: int = 0) -> list[list[int]]:
    """The index lists of one epoch's batches (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return []
    if shuffle:
        rng = _rng(seed, epoch)
        tie = rng.permutation(n)
        order = np.lexsort((tie, lengths))           # by length, random among equal lengths
        chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        return [chunks[j].tolist() for j in rng.permutation(len(chunks))]
    order = np.argsort(lengths, kind="stable")       # by length, then position
    return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


def _as_2d(a, what: str, i: int) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"sequence {i}: {what} must be (T, features), got shape {a.shape}")
    return a


def collate(pairs, index: Sequence[int]) -> Batch:
    """Zero-pad the pairs at ``index`` into one :class:`Batch` (float32, batch-first)."""
    xs = [_as_2d(pairs[i][0], "inputs", i) for i in index]
    ys = [_as_2d(pairs[i][1], "targets", i) for i in index]
    lens = np.array([len(x) for x in xs], dtype=np.int64)
    for i, x, y in zip(index, xs, ys):
        if len(x) != len(y):
            raise ValueError(f"sequence {i}: inputs have {len(x)} steps but targets {len(y)}")
    B, T = len(index), int(lens.max()) if len(index) else 0
    I, D = xs[0].shape[1], ys[0].shape[1]
    xb = np.zeros((B, T, I), dtype=np.float32)
    yb = np.zeros((B, T, D), dtype=np.float32)
    for b, (x, y) in enumerate(zip(xs, ys)):
        xb[b, :len(x)] = x
        yb[b, :len(y)] = y
    mask = np.arange(T)[None, :] < lens[:, None]
    return Batch(torch.from_numpy(xb), torch.from_numpy(yb), torch.from_numpy(lens), torch.from_numpy(mask),
                 [int(i) for i in index])


def iterate_batches(pairs, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
    """Yield the batches of one epoch over ``pairs`` (a list of (inputs, targets))."""
    order = batch_order([len(y) for _, y in pairs], batch_size, shuffle=shuffle, seed=seed, epoch=epoch)
    for idx in order:
        yield collate(pairs, idx)


def padding_fraction(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Fraction of padded (wasted) steps in the given batching."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = padded = 0
    for idx in batches:
        ls = lengths[idx]
        real += int(ls.sum())
        padded += int(ls.max()) * len(ls)
    return 1.0 - real / padded if padded else 0.0
