"""Datasets: one :class:`SequenceDataset` per task, found/downloaded/verified by :mod:`.sources`, named in
:mod:`.registry`.

    ds = load_dataset("jsb")                      # 88-key piano rolls from JSB_Chorales.mat
    ds = load_dataset("piano", width="paper")     # 108 columns, column c = MIDI pitch c + 1
    x, y = ds.splits["train"][0]                  # uint8 (T, 88) inputs / targets
"""
from .dataset import SequenceDataset
from .registry import (ALIASES, DATASETS, PREFIXES, canonical_name, clear_cache, load_dataset, prefix_of,
                       register_dataset, register_prefix)
from .sources import (ChecksumError, DataError, DataNotFoundError, KNOWN_FILES, cache_dir, find_or_fetch,
                      register_file, resolve_data_dir, verify)

__all__ = ["SequenceDataset", "DATASETS", "ALIASES", "canonical_name", "load_dataset", "clear_cache",
           "register_dataset", "PREFIXES", "register_prefix", "prefix_of",
           "DataError", "ChecksumError", "DataNotFoundError", "KNOWN_FILES", "register_file", "find_or_fetch",
           "resolve_data_dir", "cache_dir", "verify"]
