"""Your own MIDI files as a music dataset: ``midi:FOLDER`` (options: ``midi:FOLDER?key=value&...``).

    ds = load_dataset("midi:~/scores")                              # eighth-note frames, 80/10/10 split
    ds = load_dataset("midi:~/scores?step=0.125&on_error=skip")     # 125 ms frames, skip unreadable files

Files
    every ``*.mid`` / ``*.midi`` below FOLDER (recursive, case-insensitive suffix), in order of their
    relative path. Each file is one sequence.

Piano roll (the music sets' convention, see :mod:`.music`)
    uint8 (T, 88), column c = MIDI pitch c + 21 (pitches outside 21..108 are dropped and counted in
    meta["notes_outside_range"]); drum tracks are ignored; all other tracks are merged. Note onsets
    and offsets are rounded to the nearest step (ties up), a note lasts at least one step, and the
    roll runs from time 0 to the end of the last note. Pairs: targets = roll, inputs = roll shifted
    down one frame with a zero start frame (:func:`.music.roll_to_pairs`).

Options (after "?", joined by "&"; also keyword arguments of :func:`load_midi_folder`)
    step=eighth     one frame per eighth note (default), or quarter / sixteenth. Musical steps follow
                    the file's tempo map (MIDI ticks, so tempo changes are honoured).
    step=SECONDS    a fixed frame length in seconds, e.g. step=0.125.
    split=A/B/C     train/valid/test proportions (default 0.8/0.1/0.1; "80/10/10" is the same).
                    Slashes, not commas: ``gatedrnn reproduce --datasets`` splits its list on commas.
    on_error=skip   a file that cannot be parsed or has no notes is skipped with a warning naming it
                    (default on_error=raise: DataError naming the file and the reason).

Canonical name (it goes into run ids and configs): ``midi:`` + the absolute resolved folder + the
options that differ from the defaults, sorted by key, e.g. ``midi:/home/me/scores?step=0.125``.
Canonicalising never reads the folder (a trained run can still be sampled after its data moved).

Split (by file, from a hash of its relative path, so it does not depend on where the folder lives
or on the other files): u = first 64 bits of sha256(posix relative path) / 2**64, in [0, 1);
train if u < A, valid if u < A + B, else test. If that leaves a split empty (small folders), the
files are ranked by u and the first n - n_valid - n_test are train, the next n_valid valid and the
last n_test test, with n_valid, n_test = round(B·n), round(C·n), each at least 1 and leaving at least
1 train file. Fewer than 3 usable files is a DataError.

Cache: each parsed roll is kept in ``<cache_dir>/midi/`` under the file's sha256 and the step, written
atomically (temp file + os.replace) and read back with ``allow_pickle=False``. A changed file has a
new sha256, so it is parsed again.

Frame length for sampling: meta["frame_seconds"] = the step in seconds (step=SECONDS), or the median
over files of one step at the file's first tempo (musical steps); `gatedrnn sample` writes MIDI at it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .dataset import SequenceDataset
from .music import PIANO_KEYS, PIANO_LOW, SPLITS, roll_to_pairs
from .sources import DataError, cache_dir, sha256_file

__all__ = ["parse_midi_name", "canonical_midi_name", "load_midi_folder", "load_midi_dataset", "midi_to_roll",
           "split_of", "STEPS", "CACHE_VERSION"]

STEPS = {"quarter": 1.0, "eighth": 0.5, "sixteenth": 0.25}     # musical steps, in quarter notes
DEFAULTS = {"step": "eighth", "split": (0.8, 0.1, 0.1), "on_error": "raise"}
SUFFIXES = (".mid", ".midi")
CACHE_VERSION = 1   # bump when the parsing rules change, so old cached rolls are not reused


# ------------------------------------------------------------------------------ options
def _step(name, val) -> str | float:
    if isinstance(val, str) and val.strip().lower() in STEPS:
        return val.strip().lower()
    try:
        s = float(val)
    except (TypeError, ValueError):
        s = float("nan")
    if not (s > 0 and np.isfinite(s)):
        raise DataError(f"{name!r}: step must be {' | '.join(STEPS)} or a positive number of seconds, got {val!r}")
    return s


def _split(name, val) -> tuple[float, float, float]:
    parts = val.split("/") if isinstance(val, str) else list(val)
    try:
        w = [float(p) for p in parts]
    except (TypeError, ValueError):
        w = []
    if len(w) != 3 or not all(x > 0 and np.isfinite(x) for x in w):
        raise DataError(f"{name!r}: split must be three positive train/valid/test proportions, e.g. 0.8/0.1/0.1, "
                        f"got {val!r}")
    total = sum(w)
    return tuple(round(x / total, 6) for x in w)   # 6 decimals: exactly what the canonical name says


def _on_error(name, val) -> str:
    v = str(val).strip().lower()
    if v not in ("raise", "skip"):
        raise DataError(f"{name!r}: on_error must be raise or skip, got {val!r}")
    return v


_PARSE = {"step": _step, "split": _split, "on_error": _on_error}


def parse_midi_name(name: str) -> tuple[Path, dict]:
    """'midi:~/scores?step=0.125' -> (absolute resolved folder, {"step": 0.125}) — only the options given."""
    s = str(name).strip()
    if not s.lower().startswith("midi:"):
        raise DataError(f"{name!r} is not a midi: dataset name")
    body, _, query = s[5:].partition("?")
    opts = {}
    for pair in filter(None, query.split("&")):
        key, eq, val = pair.partition("=")
        if key not in _PARSE or not eq:
            raise DataError(f"{name!r}: unknown option {pair!r}; options are step=eighth|quarter|sixteenth|SECONDS, "
                            "split=TRAIN/VALID/TEST, on_error=raise|skip")
        opts[key] = _PARSE[key](name, val)
    if not body:
        raise DataError(f"{name!r}: give a folder, e.g. midi:/path/to/midi-files")
    return Path(body).expanduser().resolve(), opts


def _fmt(key, v) -> str:
    if key == "split":
        return "/".join(f"{x:g}" for x in v)
    return repr(v) if isinstance(v, float) else str(v)   # repr: the shortest string giving the same float


def canonical_midi_name(name: str, **overrides) -> str:
    """Absolute resolved folder + the non-default options sorted by key (stable for run ids)."""
    folder, opts = parse_midi_name(name)
    opts = {**opts, **{k: _PARSE[k](name, v) for k, v in overrides.items()}}
    q = "&".join(f"{k}={_fmt(k, v)}" for k, v in sorted(opts.items()) if _fmt(k, v) != _fmt(k, DEFAULTS[k]))
    return f"midi:{folder}" + (f"?{q}" if q else "")


# ------------------------------------------------------------------------------ one file
def midi_to_roll(path, step="eighth") -> tuple[np.ndarray, float, int]:
    """(uint8 (T, 88) piano roll, seconds of one step at the file's first tempo, number of notes dropped
    for lying outside the 88 keys) of one MIDI file. Raises DataError naming the file if it cannot be
    parsed or holds no (non-drum) notes."""
    import pretty_midi

    path, step = Path(path), _step(str(path), step)
    try:
        with warnings.catch_warnings():   # pretty_midi warns about harmless meta events on other tracks
            warnings.simplefilter("ignore", RuntimeWarning)
            pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as e:  # noqa: BLE001 — mido/pretty_midi raise many types for a broken file
        raise DataError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e})") from None
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    if not notes:
        raise DataError(f"{path}: holds no notes (drum tracks are ignored)")
    if isinstance(step, str):
        # Musical step: through MIDI ticks, which follow every tempo change in the file.
        ticks = pm.resolution * STEPS[step]
        to_step = lambda t: pm.time_to_tick(t) / ticks            # noqa: E731
        frame_seconds = 60.0 / float(pm.get_tempo_changes()[1][0]) * STEPS[step]
    else:
        to_step = lambda t: t / step                              # noqa: E731
        frame_seconds = float(step)
    on = np.array([np.floor(to_step(n.start) + 0.5) for n in notes], dtype=np.int64)   # nearest step
    off = np.array([np.floor(to_step(n.end) + 0.5) for n in notes], dtype=np.int64)
    off = np.maximum(off, on + 1)                                  # a short note still sounds for one step
    col = np.array([n.pitch for n in notes], dtype=np.int64) - PIANO_LOW
    keep = (col >= 0) & (col < PIANO_KEYS)
    if not keep.any():
        raise DataError(f"{path}: holds no notes in the piano range (MIDI {PIANO_LOW}..{PIANO_LOW + PIANO_KEYS - 1})")
    roll = np.zeros((int(off.max()), PIANO_KEYS), dtype=np.uint8)
    for a, b, c in zip(on[keep], off[keep], col[keep]):
        roll[a:b, c] = 1
    return roll, frame_seconds, int((~keep).sum())


def _step_key(step) -> str:
    return step if isinstance(step, str) else f"s{float(step)!r}"


def _cached_roll(path: Path, sha: str, step) -> tuple[np.ndarray, float, int]:
    """(roll, frame_seconds, notes outside the piano range) from the cache, else parsed and cached."""
    cache = cache_dir() / "midi" / f"v{CACHE_VERSION}-{sha}-{_step_key(step)}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                roll, fs, out = z["roll"], float(z["frame_seconds"]), int(z["outside"])
            if roll.dtype == np.uint8 and roll.ndim == 2 and roll.shape[1] == PIANO_KEYS:
                return roll, fs, out
        except Exception:  # noqa: BLE001 — a damaged cache entry is simply parsed again
            pass
    roll, fs, out = midi_to_roll(path, step)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, roll=roll, frame_seconds=np.float64(fs), outside=np.int64(out))
            os.replace(tmp, cache)          # readers see the old entry or the whole new one, never half
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        warnings.warn(f"could not cache the piano roll of {path} in {cache.parent}: {e}", stacklevel=3)
    return roll, fs, out


# ------------------------------------------------------------------------------ split
def _u(rel: str) -> float:
    """The relative path's place in [0, 1): first 64 bits of its sha256."""
    return int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) / 2.0 ** 64


def split_of(rels: list[str], split=DEFAULTS["split"]) -> tuple[dict[str, str], str]:
    """{relative posix path: "train" | "valid" | "test"} and the rule used (see the module docstring)."""
    n = len(rels)
    if n < 3:
        raise DataError(f"{n} usable MIDI file(s); at least 3 are needed (one each for train, valid and test)")
    a, b, _ = split
    u = {r: _u(r) for r in rels}
    out = {r: "train" if u[r] < a else "valid" if u[r] < a + b else "test" for r in rels}
    if set(out.values()) == set(SPLITS):
        return out, f"by hash of the relative path: u < {a:g} train, < {a + b:g} valid, else test"
    n_test = min(max(1, round(split[2] * n)), n - 2)
    n_valid = min(max(1, round(split[1] * n)), n - 1 - n_test)
    ranked = sorted(rels, key=lambda r: (u[r], r))
    n_train = n - n_valid - n_test
    out = {r: "train" if i < n_train else "valid" if i < n_train + n_valid else "test" for i, r in enumerate(ranked)}
    return out, (f"ranked by hash of the relative path (a split was empty by u): {n_train} train, "
                 f"{n_valid} valid, {n_test} test")


# ------------------------------------------------------------------------------ loader
def load_midi_folder(path, *, step="eighth", split=DEFAULTS["split"], on_error="raise",
                     name: str | None = None) -> SequenceDataset:
    """A music dataset (kind "music", 88 keys) from a folder of MIDI files; see the module docstring."""
    folder = Path(path).expanduser().resolve()
    label = name or f"midi:{folder}"
    step, split, on_error = _step(label, step), _split(label, split), _on_error(label, on_error)
    if not folder.is_dir():
        raise DataError(f"MIDI folder {folder} does not exist or is not a folder")
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise DataError(f"no .mid/.midi files in {folder}")
    rolls, shas, secs, skipped, outside = {}, {}, [], [], 0
    for p in files:
        rel = p.relative_to(folder).as_posix()
        sha = sha256_file(p)
        try:
            roll, fs, out = _cached_roll(p, sha, step)
        except DataError as e:
            if on_error == "raise":
                raise
            warnings.warn(f"skipped {e}", stacklevel=2)
            skipped.append({"file": rel, "reason": str(e)})
            continue
        rolls[rel], shas[rel] = roll, sha
        secs.append(fs)
        outside += out
    try:
        assign, rule = split_of(list(rolls), split)
    except DataError as e:
        raise DataError(f"{folder}: {e}" + (f" ({len(skipped)} skipped)" if skipped else "")) from None
    name = name or canonical_midi_name(f"midi:{folder}", step=step, split=split, on_error=on_error)
    by_split = {s: [r for r in rolls if assign[r] == s] for s in SPLITS}
    digest = hashlib.sha256("".join(f"{shas[r]}  {r}\n" for r in rolls).encode()).hexdigest()
    meta = {
        "title": name,
        "lowest_pitch": PIANO_LOW, "width": PIANO_KEYS, "width_mode": "88",
        "format": "midi", "source_file": str(folder), "folder": str(folder),
        "step": step,
        "frame_seconds": float(np.median(secs)),
        "frame_rate_note": (f"one frame per {step} note (each file's tempo map); frame_seconds = median over "
                            "files at their first tempo") if isinstance(step, str) else
                           f"one frame per {step:g} s",
        "split": list(split), "split_rule": rule,
        "sequences": {s: len(by_split[s]) for s in SPLITS},
        "skipped": skipped, "notes_outside_range": int(outside), "files_digest": digest,
        "target": "binary piano roll; frame t predicted from frames < t (frame 0 from a zero start frame)",
    }
    ds = SequenceDataset(name=name, kind="music", input_size=PIANO_KEYS, target_size=PIANO_KEYS,
                         splits={s: [roll_to_pairs(rolls[r]) for r in by_split[s]] for s in SPLITS},
                         files={str(folder / r): sha for r, sha in shas.items()}, meta=meta)
    ds.provenance = by_split    # split -> relative paths, in the order of ds.splits[split] (not saved with runs)
    return ds


def load_midi_dataset(name: str, data_dir=None, *, fmt="auto", width="88", download=True, mirror=None, **kw):
    """The registry's loader: options from the name, overridden by keyword arguments of the same name."""
    if str(width) != "88":
        raise DataError(f"{name}: MIDI folders are read as the 88 piano keys (width 88), not width {width!r}")
    folder, opts = parse_midi_name(name)
    opts.update({k: v for k, v in kw.items() if k in DEFAULTS})
    return load_midi_folder(folder, name=canonical_midi_name(name, **opts), **opts)

