"""The dataset registry: every name `load_dataset` knows, and the cache of what it loaded.

Built-in: the four music sets (.music), fsdd-a / fsdd-b (.speech) and the user's folders "midi:FOLDER"
(.midi) and "wav:FOLDER" (.speech), all registered at the end of this module. Other code adds datasets
with :func:`register_dataset` / :func:`register_prefix`.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from .dataset import SequenceDataset
from .midi import canonical_midi_name, load_midi_dataset
from .music import MUSIC_ALIASES, MUSIC_SETS, load_music
from .sources import DataError
from .speech import FSDD_VARIANTS, canonical_wav_name, load_fsdd, load_wav_dataset

__all__ = ["DATASETS", "ALIASES", "PREFIXES", "register_dataset", "register_prefix", "prefix_of",
           "canonical_name", "load_dataset", "without_empty", "clear_cache", "CACHE_SIZE"]

DATASETS: dict[str, Callable[..., SequenceDataset]] = {}
ALIASES: dict[str, str] = {}
# "prefix:rest" names (e.g. "wav:/path/to/folder"): prefix -> (canonicalise(name) -> str, loader(name, **kw))
PREFIXES: dict[str, tuple[Callable[[str], str], Callable[..., SequenceDataset]]] = {}


def register_prefix(prefix: str, canonicalise: Callable[[str], str], loader: Callable[..., SequenceDataset]):
    """Datasets named "<prefix>:<anything>", e.g. speech's "wav:/path/to/folder"."""
    PREFIXES[prefix.lower()] = (canonicalise, loader)


def prefix_of(name: str) -> str | None:
    """The registered prefix of a "prefix:rest" name (wav:FOLDER, midi:FOLDER), else None."""
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
    clear_cache()


def canonical_name(name: str) -> str:
    """"jsb", "JSB", "jsb_chorales" -> "jsb"; unknown names raise DataError listing the valid ones."""
    if prefix_of(name):
        return PREFIXES[prefix_of(name)][0](str(name).strip())
    key = ALIASES.get(_norm(name))
    if key is None:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)} "
                        f"(aliases: {', '.join(sorted(a for a in ALIASES if a not in DATASETS))})")
    return key


# ------------------------------------------------------------------------------------ the cache
# A process that trains many runs of one dataset (a study's worker) reads and checks its files once
# (FSDD: ~4.5 s a load). Registered datasets only: a "prefix:FOLDER" is the user's working folder, read
# afresh every time (midi: keeps a per-file cache on disk). A few entries: the music sets and FSDD are
# tens of MB each.
CACHE_SIZE = 4
_CACHE: OrderedDict[tuple, tuple[tuple, SequenceDataset]] = OrderedDict()


def clear_cache() -> None:
    _CACHE.clear()


def _stamp(ds: SequenceDataset) -> tuple:
    """The size and modification time of every file a dataset was read from: a file replaced since is
    read (and checked) again."""
    out = []
    for f in sorted(ds.files):
        try:
            st = os.stat(f)
            out.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((f, None, None))
    return tuple(out)


def load_dataset(name: str, data_dir=None, *, fmt: str = "auto", width="88", download: bool = True,
                 mirror: str | None = None, **kwargs) -> SequenceDataset:
    """Load a registered dataset by (alias) name. Extra keyword arguments go to its loader
    (music: ``allow_unverified``). The same arguments within a process return the same object (while
    its files are unchanged): treat it as read-only (SequenceDataset.sliced makes a trimmed copy)."""
    key = canonical_name(name)
    if prefix_of(key):
        return without_empty(PREFIXES[prefix_of(key)][1](key, data_dir=data_dir, fmt=fmt, width=width,
                                                          download=download, mirror=mirror, **kwargs))
    where = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else None
    # the environment says where data_dir=None looks and what may be downloaded or accepted unverified
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("GATEDRNN_")))
    ck = (key, where, env, fmt, str(width), download, mirror, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    hit = _CACHE.get(ck)
    if hit is not None and hit[0] == _stamp(hit[1]):
        _CACHE.move_to_end(ck)
        return hit[1]
    ds = without_empty(DATASETS[key](data_dir=data_dir, fmt=fmt, width=width, download=download, mirror=mirror,
                                     **kwargs))
    _CACHE[ck] = (_stamp(ds), ds)
    _CACHE.move_to_end(ck)
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ds


def without_empty(ds: SequenceDataset) -> SequenceDataset:
    """The dataset without its sequences of 0 steps (nothing to predict, and a batch of only such
    sequences has no time axis): each one left out is named in a warning and in meta["empty_skipped"]
    ({split: [positions in the split as loaded]}). A split left with no sequence is a DataError. The
    built-in loaders never produce one (they refuse empty rolls and recordings); a registered loader
    or a user's folder may."""
    empty = {s: [i for i, (_, y) in enumerate(pairs) if len(y) == 0] for s, pairs in ds.splits.items()}
    if not any(empty.values()):
        return ds
    for s, idx in empty.items():
        if idx and len(idx) == len(ds.splits[s]):
            raise DataError(f"{ds.name}: every sequence of the {s} split has 0 steps; nothing to train or "
                            f"score on")
    out = copy.copy(ds)
    keep = {s: sorted(set(range(len(pairs))) - set(empty[s])) for s, pairs in ds.splits.items()}
    out.splits = {s: [ds.splits[s][i] for i in keep[s]] for s in ds.splits}
    prov = getattr(ds, "provenance", None)
    if isinstance(prov, dict):
        out.provenance = {s: [v[i] for i in keep[s]] if len(v) == len(ds.splits.get(s, ())) else v
                          for s, v in prov.items()}
    skipped = {s: idx for s, idx in empty.items() if idx}
    out.meta = {**ds.meta, "empty_skipped": skipped}
    warnings.warn(f"{ds.name}: left out {sum(map(len, skipped.values()))} sequence(s) of 0 steps ("
                  + ", ".join(f"{s} {idx[:5]}{'...' if len(idx) > 5 else ''}" for s, idx in skipped.items())
                  + ")", stacklevel=3)
    return out


# ------------------------------------------------------------------------------- the built-ins
def _music_loader(key: str):
    def load(data_dir=None, *, fmt="auto", width="88", download=True, mirror=None, **kw):
        return load_music(key, data_dir, fmt=fmt, width=width, download=download, mirror=mirror, **kw)
    load.__name__ = f"load_{key}"
    load.__doc__ = f"Load {MUSIC_SETS[key].title} (see gatedrnn.data.music.load_music)."
    return load


def _fsdd_loader(variant: str):
    def load(data_dir=None, *, fmt="auto", width="88", download=True, mirror=None, **kw):
        return load_fsdd(variant, data_dir, download=download, mirror=mirror, **kw)
    load.__name__ = f"load_{variant.replace('-', '_')}"
    load.__doc__ = f"Load {FSDD_VARIANTS[variant].title} (see gatedrnn.data.speech)."
    return load


for _key, _aliases in MUSIC_ALIASES.items():
    register_dataset(_key, _music_loader(_key), _aliases)
register_dataset("fsdd-a", _fsdd_loader("fsdd-a"), ("fsdd_a", "ubisoft-a", "speech-a"))
register_dataset("fsdd-b", _fsdd_loader("fsdd-b"), ("fsdd_b", "ubisoft-b", "speech-b"))
register_prefix("midi", canonical_midi_name, load_midi_dataset)
register_prefix("wav", canonical_wav_name, load_wav_dataset)
