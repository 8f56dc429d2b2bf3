"""Mini-batches of variable-length sequences with length bucketing.

Sequences are sorted by length (ties broken by a seeded random key), cut into consecutive chunks of
``batch_size`` and, when shuffling, the order of those chunks is shuffled. Neighbours in the sorted
order have similar lengths, so zero padding stays small. All randomness comes from a local numpy
Generator seeded with (seed, epoch): the batches of epoch k are the same whether or not the run was
interrupted and resumed. Every sequence appears exactly once per epoch.

Evaluation (`eval_batches`) reads the same splits every epoch in the same order, so its batches are
collated once and cached (per split object), in a compact dtype (uint8) where that is exact.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

__all__ = ["Batch", "iterate_batches", "batch_order", "collate", "padding_fraction", "eval_batches",
           "clear_eval_cache"]


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

    def float(self, dtype: torch.dtype = torch.float32) -> "Batch":
        """The same batch with floating-point inputs/targets (a no-op if they already are)."""
        if self.inputs.dtype == dtype and self.targets.dtype == dtype:
            return self
        return Batch(self.inputs.to(dtype), self.targets.to(dtype), self.lengths, self.mask, list(self.index))

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


_COMPACT = (np.uint8, np.bool_)


def collate(pairs, index: Sequence[int], compact: bool = False) -> Batch:
    """Zero-pad the pairs at ``index`` into one :class:`Batch` (float32, batch-first). compact=True keeps
    uint8 inputs/targets where every array of the batch is uint8 or bool (exact; 4x less memory)."""
    xs = [_as_2d(pairs[i][0], "inputs", i) for i in index]
    ys = [_as_2d(pairs[i][1], "targets", i) for i in index]
    lens = np.array([len(x) for x in xs], dtype=np.int64)
    for i, x, y in zip(index, xs, ys):
        if len(x) != len(y):
            raise ValueError(f"sequence {i}: inputs have {len(x)} steps but targets {len(y)}")
        if len(y) == 0:   # nothing to predict; a batch of only such sequences has no time axis for the model
            raise ValueError(f"sequence {i} has 0 steps: nothing to predict (load_dataset leaves such "
                             f"sequences out; drop them from a split you build yourself)")
    B, T = len(index), int(lens.max()) if len(index) else 0
    I, D = xs[0].shape[1], ys[0].shape[1]
    small = lambda arrs: compact and all(a.dtype.type in _COMPACT for a in arrs)
    xb = np.zeros((B, T, I), dtype=np.uint8 if small(xs) else np.float32)
    yb = np.zeros((B, T, D), dtype=np.uint8 if small(ys) else np.float32)
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


# ------------------------------------------------------------------------------------ evaluation
EVAL_CACHE_SPLITS = 6     # splits whose evaluation batches are kept (train/valid/test of two datasets)
_eval_cache: "OrderedDict[tuple, tuple]" = OrderedDict()
_eval_lock = threading.Lock()


def eval_batches(pairs, batch_size: int) -> list[Batch]:
    """The batches of one evaluation pass over ``pairs`` (length-sorted, not shuffled: the order of
    ``iterate_batches(pairs, batch_size, shuffle=False)``), collated once and cached, so a split that is
    evaluated every epoch is collated only the first time. Inputs/targets are uint8 where the data are
    (piano rolls; `Batch.float()` converts). The cache is keyed by the split object's identity and checked
    element by element (the same sequence objects in the same order), so a changed split is collated
    anew; it holds at most EVAL_CACHE_SPLITS splits (least recently used out)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    key = (id(pairs), int(batch_size))
    with _eval_lock:
        hit = _eval_cache.get(key)
        if hit is not None:
            ref, items, batches = hit
            if ref is pairs and len(items) == len(pairs) and all(a is b for a, b in zip(items, pairs)):
                _eval_cache.move_to_end(key)
                return batches
    order = batch_order([len(y) for _, y in pairs], batch_size, shuffle=False)
    batches = [collate(pairs, idx, compact=True) for idx in order]
    with _eval_lock:
        # the entry holds the split and its items, so their ids cannot be reused while it is cached
        _eval_cache[key] = (pairs, list(pairs), batches)
        _eval_cache.move_to_end(key)
        while len(_eval_cache) > EVAL_CACHE_SPLITS:
            _eval_cache.popitem(last=False)
    return batches


def clear_eval_cache() -> None:
    with _eval_lock:
        _eval_cache.clear()


def padding_fraction(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Fraction of padded (wasted) steps in the given batching."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = padded = 0
    for idx in batches:
        ls = lengths[idx]
        real += int(ls.sum())
        padded += int(ls.max()) * len(ls)
    return 1.0 - real / padded if padded else 0.0
