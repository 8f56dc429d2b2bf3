"""The one dataset type every loader returns (the bottom of gatedrnn.data: it imports nothing of it)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SequenceDataset:
    """A task's splits. load_dataset hands the same object to every caller with the same arguments:
    treat it as read-only and derive views with :meth:`sliced`."""
    name: str                    # canonical name, e.g. "jsb"
    kind: str                    # "music" | "speech"
    input_size: int
    target_size: int
    splits: dict[str, list[tuple[np.ndarray, np.ndarray]]]  # split -> [(inputs (T, I), targets (T, D))]
    files: dict[str, str]        # absolute path of each file read -> sha256
    meta: dict = field(default_factory=dict)

    def num_steps(self, split: str) -> int:
        """Predicted time steps (frames) of a split."""
        return int(sum(len(y) for _, y in self.splits[split]))

    def sliced(self, limit_sequences: int | None = None, crop_length: int | None = None, *,
               spread: bool = False) -> SequenceDataset:
        """A copy holding `limit_sequences` sequences of every split — the first ones, or with `spread` the
        ones at indices floor(i·n/N), i < N, spread evenly over the split's n (so a split stored speaker by
        speaker keeps every speaker) — each cropped to at most `crop_length` steps (views of the same
        arrays; None: no limit). Provenance, where the loader records it, follows the same selection. This
        dataset is left as it is."""
        def pick(seq):
            n = len(seq)
            if limit_sequences is None or limit_sequences >= n:
                return list(seq)
            if not spread:
                return list(seq[:limit_sequences])
            return [seq[i * n // limit_sequences] for i in range(limit_sequences)]

        out = copy.copy(self)   # keeps attributes loaders add (provenance)
        out.splits = {s: [(x[:crop_length], y[:crop_length]) for x, y in pick(pairs)]
                      if crop_length else pick(pairs) for s, pairs in self.splits.items()}
        prov = getattr(self, "provenance", None)
        if isinstance(prov, dict):
            out.provenance = {s: pick(v) for s, v in prov.items()}
        return out

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(p)}" for s, p in self.splits.items())
        return (f"SequenceDataset(name={self.name!r}, kind={self.kind!r}, input_size={self.input_size}, "
                f"target_size={self.target_size}, splits=({sizes}), files={list(self.files)})")
