"""Datasets: one :class:`SequenceDataset` per task, found/downloaded/verified by :mod:`.sources`.

    ds = load_dataset("jsb")                      # 88-key piano rolls from JSB_Chorales.mat
    ds = load_dataset("piano", width="paper")     # 108 columns, column c = MIDI pitch c + 1
    x, y = ds.splits["train"][0]                  # uint8 (T, 88) inputs / targets

Other modules add datasets with :func:`register_dataset` (a module ``gatedrnn.data.speech``, if present,
is imported at the end of this file so that it can register itself).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .sources import (ChecksumError, DataError, DataNotFoundError, KNOWN_FILES, cache_dir, find_or_fetch,
                      register_file, resolve_data_dir, verify)

__all__ = ["SequenceDataset", "DATASETS", "ALIASES", "canonical_name", "load_dataset", "register_dataset",
           "PREFIXES", "register_prefix",
           "DataError", "ChecksumError", "DataNotFoundError", "KNOWN_FILES", "register_file", "find_or_fetch",
           "resolve_data_dir", "cache_dir", "verify"]


@dataclass
class SequenceDataset:
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

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(p)}" for s, p in self.splits.items())
        return (f"SequenceDataset(name={self.name!r}, kind={self.kind!r}, input_size={self.input_size}, "
                f"target_size={self.target_size}, splits=({sizes}), files={list(self.files)})")


DATASETS: dict[str, Callable[..., SequenceDataset]] = {}
ALIASES: dict[str, str] = {}
# "prefix:rest" names (e.g. "wav:/path/to/folder"): prefix -> (canonicalise(name) -> str, loader(name, **kw))
PREFIXES: dict[str, tuple[Callable[[str], str], Callable[..., SequenceDataset]]] = {}


def register_prefix(prefix: str, canonicalise: Callable[[str], str], loader: Callable[..., SequenceDataset]):
    """Datasets named "<prefix>:<anything>", e.g. speech's "wav:/path/to/folder"."""
    PREFIXES[prefix.lower()] = (canonicalise, loader)


def _prefix(name: str) -> str | None:
    head, sep, _ = str(name).strip().partition(":")
    return head.lower() if sep and head.lower() in PREFIXES else None


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).strip().lower() if ch.isalnum())


def register_dataset(name: str, loader: Callable[..., SequenceDataset], aliases=(), *, replace: bool = False):
    """Register ``loader(data_dir=None, *, fmt, width, download, mirror, **kw)`` under ``name``.

    Aliases are matched case-insensitively ignoring spaces, '-', '_' and '.'.
    """
    if name in DATASETS and not replace:
        raise ValueError(f"dataset {name!r} is already registered")
    DATASETS[name] = loader
    for a in (name, *aliases):
        ALIASES[_norm(a)] = name


def canonical_name(name: str) -> str:
    """"jsb", "JSB", "jsb_chorales" -> "jsb"; unknown names raise DataError listing the valid ones."""
    if _prefix(name):
        return PREFIXES[_prefix(name)][0](str(name).strip())
    key = ALIASES.get(_norm(name))
    if key is None:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)} "
                        f"(aliases: {', '.join(sorted(a for a in ALIASES if a not in DATASETS))})")
    return key


def load_dataset(name: str, data_dir=None, *, fmt: str = "auto", width="88", download: bool = True,
                 mirror: str | None = None, **kwargs) -> SequenceDataset:
    """Load a registered dataset by (alias) name. Extra keyword arguments go to its loader
    (music: ``allow_unverified``)."""
    key = canonical_name(name)
    if _prefix(key):
        return PREFIXES[_prefix(key)][1](key, data_dir=data_dir, fmt=fmt, width=width, download=download,
                                         mirror=mirror, **kwargs)
    return DATASETS[key](data_dir=data_dir, fmt=fmt, width=width, download=download, mirror=mirror, **kwargs)


# ---------------------------------------------------------------------------------- music
from . import music as _music  # noqa: E402  (needs SequenceDataset above)

_MUSIC_ALIASES = {
    "jsb": ("jsb_chorales", "jsb chorales", "jsbchorales", "JSB_Chorales", "bach"),
    "nottingham": ("nott", "Nottingham"),
    "musedata": ("muse", "muse_data", "MuseData"),
    "piano": ("piano-midi", "piano_midi", "pianomidi", "piano-midi.de", "piano_midi_de"),
}


def _music_loader(key: str):
    def load(data_dir=None, *, fmt="auto", width="88", download=True, mirror=None, **kw):
        return _music.load_music(key, data_dir, fmt=fmt, width=width, download=download, mirror=mirror, **kw)
    load.__name__ = f"load_{key}"
    load.__doc__ = f"Load {_music.MUSIC_SETS[key].title} (see gatedrnn.data.music.load_music)."
    return load


for _key, _aliases in _MUSIC_ALIASES.items():
    register_dataset(_key, _music_loader(_key), _aliases)

from . import midi as _midi  # noqa: E402,F401  (registers "midi:FOLDER" names; needs music above)

# -------------------------------------------------------------------- optional extensions
for _mod in ("speech",):
    if importlib.util.find_spec(f"{__name__}.{_mod}") is not None:
        importlib.import_module(f"{__name__}.{_mod}")
