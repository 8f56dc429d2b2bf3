"""Raw speech: open stand-ins for the paper's Ubisoft A/B sets, built from the Free Spoken Digit
Dataset (FSDD v1.0.10, 3,000 recordings, 8 kHz, 16-bit mono, CC BY-SA 4.0), and the same kind of
dataset from any folder of WAV files. Full description and measured sizes: docs/SPEECH.md.

Framing (the paper's task: read 20 consecutive samples, predict the next 10)
    step t reads samples s[10t : 10t+20] and predicts s[10t+20 : 10t+30];
    a sequence of N samples gives T = floor((N − 30) / 10) + 1 steps (500 → 48, 8000 → 798).

Datasets
    fsdd-a  (Ubisoft A: many short sequences) 500-sample sequences (62.5 ms), at most 7,230.
            Each recording is cut into consecutive non-overlapping 500-sample windows (from its first
            sample; the remainder is dropped).
    fsdd-b  (Ubisoft B: few long sequences) 8,000-sample sequences (1 s), at most 800. FSDD's
            recordings are 0.14–2.28 s long, so within one split all recordings of one speaker are
            joined end to end (ordered by take index, then digit) into one stream, and the stream is
            cut into consecutive 8,000-sample sequences (the remainder is dropped). Streams never
            cross a split.

Split (by recording; no recording, hence no audio, is in two splits; all 6 speakers in every split)
    test  = take indices 0–4 (FSDD's official test split, 300 recordings)
    valid = take indices 5–9 (300 recordings)
    train = take indices 10–49 (2,400 recordings)

Selection under the cap: the cap is shared among splits in proportion to their recordings (A:
5,784 / 723 / 723, B: 640 / 80 / 80). Within a split, the windows of each group (a recording for A,
a speaker stream for B) are ranked by RMS energy, loudest first; the split takes rank 0 of every
group, then rank 1 of every group, and so on until its budget is reached (the last round in group
order). This keeps every recording/speaker represented and prefers speech over the near-silence at
the recordings' edges. The kept sequences are listed in group order, then time order.

Normalisation (fitted on the train split only, constants in ds.meta["norm"])
    x = int16 / 32768   (soundfile's float reading of 16-bit PCM)
    z = (x − mean) / std,   mean and std over every sample of the train sequences (float64).
Sampling inverts it: x = z · std + mean, clipped to [−1, 1), written as 16-bit PCM.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .dataset import SequenceDataset
from .sources import (ChecksumError, DataError, DataNotFoundError, _download_to, _join_mirror, cache_dir,
                      describe_failures, existing_data_dir, is_offline, sha256_file)

__all__ = ["N_IN", "N_OUT", "STRIDE", "FSDD_RATE", "FSDD_VARIANTS", "MANIFEST", "MANIFEST_SHA256",
           "num_steps", "frame", "fsdd_split", "read_manifest", "find_fsdd", "verify_fsdd", "download_fsdd",
           "fsdd_verify_row",
           "read_audio", "load_fsdd", "load_wav_folder", "load_wav_dataset", "parse_wav_name", "speech_stats",
           "format_speech_stats", "denormalise", "normalise"]

N_IN, N_OUT, STRIDE = 20, 10, 10      # read 20 samples, predict the next 10, move on by 10
SPLITS = ("train", "valid", "test")

FSDD_RATE = 8000
FSDD_TAG = "v1.0.10"
FSDD_ARCHIVE = "free-spoken-digit-dataset-1.0.10.tar.gz"
FSDD_URLS = ("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",)
MANIFEST = Path(__file__).with_name("fsdd_wav.sha256")
MANIFEST_SHA256 = "1801eae019c063377d98f831d3f93574f259475df7332bb0e3d1b080fb5e6959"
FSDD_LICENSE = "CC BY-SA 4.0 (Free Spoken Digit Dataset, Jakobovski et al.)"
_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


@dataclass(frozen=True)
class Variant:
    title: str
    seq_len: int          # samples per sequence
    max_sequences: int    # cap over all splits
    join: bool            # join recordings into per-speaker streams before cutting


FSDD_VARIANTS = {
    "fsdd-a": Variant("FSDD A (stand-in for Ubisoft A)", 500, 7230, False),
    "fsdd-b": Variant("FSDD B (stand-in for Ubisoft B)", 8000, 800, True),
}


# ------------------------------------------------------------------------------ framing
def num_steps(n_samples: int, n_in: int = N_IN, n_out: int = N_OUT, stride: int = STRIDE) -> int:
    """Steps of a sequence of n_samples: floor((N − n_in − n_out) / stride) + 1 (0 if too short)."""
    n = int(n_samples) - n_in - n_out
    return n // stride + 1 if n >= 0 else 0


def frame(signal: np.ndarray, n_in: int = N_IN, n_out: int = N_OUT, stride: int = STRIDE):
    """(inputs (T, n_in), targets (T, n_out)) float32: step t reads signal[t·stride : t·stride + n_in]
    and predicts signal[t·stride + n_in : t·stride + n_in + n_out]."""
    s = np.asarray(signal, dtype=np.float32).reshape(-1)
    T = num_steps(len(s), n_in, n_out, stride)
    if T == 0:
        return np.zeros((0, n_in), np.float32), np.zeros((0, n_out), np.float32)
    win = np.lib.stride_tricks.sliding_window_view(s, n_in + n_out)[: (T - 1) * stride + 1: stride]
    return np.ascontiguousarray(win[:, :n_in]), np.ascontiguousarray(win[:, n_in:])


def normalise(x: np.ndarray, norm: dict) -> np.ndarray:
    return (np.asarray(x, np.float64) - norm["mean"]) / norm["std"]


def denormalise(z: np.ndarray, norm: dict) -> np.ndarray:
    """Normalised values back to [-1, 1) audio (unclipped)."""
    return np.asarray(z, np.float64) * norm["std"] + norm["mean"]


# ------------------------------------------------------------------------------ FSDD files
def fsdd_split(filename: str) -> str:
    """'3_theo_7.wav' -> 'valid' (test: take 0–4, valid: 5–9, train: 10–49)."""
    m = _FSDD_NAME.match(Path(filename).name)
    if not m:
        raise DataError(f"{filename!r} is not an FSDD recording name ({{digit}}_{{speaker}}_{{index}}.wav)")
    idx = int(m.group(3))
    return "test" if idx < 5 else "valid" if idx < 10 else "train"


def read_manifest(path=MANIFEST) -> dict[str, str]:
    """The packaged sha256 list: {file name: sha256}. Its own digest is checked."""
    path = Path(path)
    if path == MANIFEST and sha256_file(path) != MANIFEST_SHA256:
        raise ChecksumError(f"the packaged FSDD manifest {path} has sha256 {sha256_file(path)}, expected "
                            f"{MANIFEST_SHA256}; the installation is damaged")
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64 or not _FSDD_NAME.match(parts[1].lstrip("*")):
            raise DataError(f"{path}:{i}: not a '<sha256>  <name>.wav' line: {line!r}")
        out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def _candidates(data_dir) -> list[Path]:
    d = existing_data_dir(data_dir)
    out = [d / "speech" / "fsdd", d / "fsdd"] if d is not None else []
    return out + [cache_dir() / "speech" / "fsdd"]


def verify_fsdd(folder, manifest: dict[str, str] | None = None) -> list[dict]:
    """Rows {file, path, status: ok | missing | mismatch, expected, actual} for every manifest entry."""
    manifest = read_manifest() if manifest is None else manifest
    folder = Path(folder)
    rows = []
    for name, sha in manifest.items():
        p = folder / name
        if not p.is_file():
            rows.append({"file": name, "path": str(p), "status": "missing", "expected": sha, "actual": None})
            continue
        actual = sha256_file(p)
        rows.append({"file": name, "path": str(p), "status": "ok" if actual == sha else "mismatch",
                     "expected": sha, "actual": actual})
    return rows


def fsdd_verify_row(data_dir=None) -> dict:
    """One row in the format of sources.verify() summarising the 3,000 FSDD wavs (never downloads)."""
    manifest = read_manifest()
    row = {"file": f"fsdd/*.wav ({len(manifest)})", "dataset": "fsdd", "format": "wav", "path": None,
           "expected": MANIFEST_SHA256, "actual": None, "checksum_source": "verified", "status": "missing"}
    for c in _candidates(data_dir):
        if c.is_dir() and any(c.glob("*.wav")):
            rows = verify_fsdd(c, manifest)
            counts = {st: sum(r["status"] == st for r in rows) for st in ("ok", "missing", "mismatch")}
            row["path"] = str(c.resolve())
            row["status"] = "mismatch" if counts["mismatch"] else "missing" if counts["missing"] else "ok"
            row["actual"] = MANIFEST_SHA256 if row["status"] == "ok" else \
                f"{counts['ok']} ok, {counts['missing']} missing, {counts['mismatch']} mismatched"
            break
    return row


def _check_folder(folder: Path, manifest: dict[str, str]) -> None:
    rows = verify_fsdd(folder, manifest)
    bad = [r for r in rows if r["status"] == "mismatch"]
    if bad:
        r = bad[0]
        raise ChecksumError(f"checksum mismatch for FSDD file {r['path']}: expected sha256 {r['expected']}, got "
                            f"{r['actual']} ({len(bad)} of {len(rows)} files differ). Replace the folder with FSDD "
                            f"{FSDD_TAG} (gatedrnn data download fsdd-a) or delete it to re-download.")
    missing = [r["file"] for r in rows if r["status"] == "missing"]
    if missing:
        raise DataError(f"FSDD folder {folder} is incomplete: {len(missing)} of {len(rows)} recordings are missing "
                        f"(e.g. {', '.join(missing[:3])}). Copy the full recordings/ folder of FSDD {FSDD_TAG} "
                        "there, or delete it so that it can be downloaded.")


def find_fsdd(data_dir=None, download: bool = True, mirror: str | None = None) -> Path:
    """A folder holding all 3,000 verified FSDD wavs: <data_dir>/speech/fsdd, <data_dir>/fsdd, then the
    cache ($GATEDRNN_CACHE/speech/fsdd); else download into the cache (unless offline)."""
    manifest = read_manifest()
    cands = _candidates(data_dir)
    for c in cands:
        if c.is_dir() and any(c.glob("*.wav")):
            _check_folder(c, manifest)
            return c.resolve()
    if not download or is_offline():
        raise DataNotFoundError(f"FSDD recordings not found (looked in: {', '.join(map(str, cands))}) and "
                                "downloading is disabled; set GATEDRNN_DATA_DIR or --data-dir to a folder with "
                                "speech/fsdd/*.wav")
    return download_fsdd(mirror=mirror)


def download_fsdd(dest=None, mirror: str | None = None, *, urls=None, manifest: dict[str, str] | None = None) -> Path:
    """Download FSDD's v1.0.10 archive, extract only recordings/<name>.wav entries named in the manifest
    (regular files, written by base name: nothing outside ``dest`` can be written), verify each file,
    and return ``dest`` (default: the cache's speech/fsdd)."""
    manifest = read_manifest() if manifest is None else manifest
    dest = Path(dest) if dest is not None else cache_dir() / "speech" / "fsdd"
    dest.mkdir(parents=True, exist_ok=True)
    tried = []
    for m in (mirror, os.environ.get("GATEDRNN_MIRROR")):
        if m and _join_mirror(m, FSDD_ARCHIVE) not in tried:
            tried.append(_join_mirror(m, FSDD_ARCHIVE))
    tried += [u for u in (urls if urls is not None else FSDD_URLS) if u not in tried]
    timeout = float(os.environ.get("GATEDRNN_DOWNLOAD_TIMEOUT", "30"))
    failures = []
    for url in tried:
        try:
            tmp, _ = _download_to(url, dest, FSDD_ARCHIVE, timeout, None)
        except Exception as e:  # HTTP, DNS, refused, timeout, bad URL
            failures.append((url, str(getattr(e, "reason", e))))
            continue
        try:
            bad = _extract_recordings(tmp, dest, manifest)
        except (tarfile.TarError, OSError, EOFError) as e:
            failures.append((url, f"not a readable tar.gz archive ({e})"))
            continue
        finally:
            tmp.unlink(missing_ok=True)
        if bad:
            raise ChecksumError(f"{len(bad)} recordings from {url} do not match the manifest (e.g. {bad[0]}); "
                                "they were not kept")
        _check_folder(dest, manifest)
        return dest.resolve()
    raise DataNotFoundError(f"could not download FSDD {FSDD_TAG}: {describe_failures(failures)}")


def _extract_recordings(archive: Path, dest: Path, manifest: dict[str, str]) -> list[str]:
    bad = []
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            p = PurePosixPath(member.name)
            if not member.isfile() or p.parent.name != "recordings" or p.name not in manifest:
                continue  # links, devices, folders, other files, unknown names: never extracted
            if ".." in p.parts or p.is_absolute():
                continue
            f = tf.extractfile(member)
            data = f.read() if f is not None else b""
            if hashlib.sha256(data).hexdigest() != manifest[p.name]:
                bad.append(p.name)
                continue
            tmp = dest / f".part-{p.name}"
            tmp.write_bytes(data)
            os.replace(tmp, dest / p.name)
    return bad


# ------------------------------------------------------------------------------ audio reading
def read_audio(path, rate: int | None = None) -> tuple[np.ndarray, int]:
    """(mono float64 signal in [-1, 1], rate). Stereo/multichannel is averaged to mono; with ``rate``
    the signal is resampled (scipy.signal.resample_poly). Unreadable/empty files raise DataError."""
    import soundfile as sf
    path = Path(path)
    try:
        data, native = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as e:  # soundfile.LibsndfileError, RuntimeError, ...
        raise DataError(f"cannot read audio file {path}: {' '.join(str(e).split())}") from None
    if data.size == 0:
        raise DataError(f"audio file {path} holds no samples")
    x = data.mean(axis=1)
    if not np.isfinite(x).all():
        raise DataError(f"audio file {path} holds non-finite samples (NaN/inf)")
    if rate is not None and int(rate) != int(native):
        from scipy.signal import resample_poly
        g = math.gcd(int(rate), int(native))
        x = resample_poly(x, int(rate) // g, int(native) // g)
        native = int(rate)
    return x, int(native)


# ------------------------------------------------------------------------------ building
@dataclass
class _Recording:
    split: str
    group: str        # stream key (joining) / display
    order: tuple      # position within the group's stream
    name: str
    signal: np.ndarray


def _budgets(cap: int | None, counts: dict[str, int]) -> dict[str, int | None]:
    """Share ``cap`` among splits in proportion to counts (largest remainder; sums to cap)."""
    if cap is None:
        return {s: None for s in counts}
    total = sum(counts.values())
    raw = {s: cap * c / total for s, c in counts.items()}
    out = {s: int(math.floor(v)) for s, v in raw.items()}
    for s in sorted(raw, key=lambda s: (-(raw[s] - out[s]), SPLITS.index(s)))[: cap - sum(out.values())]:
        out[s] += 1
    return out


def _cut(recs: list[_Recording], seq_len: int, join: bool, budget: int | None):
    """Sequences (group, position, window, source recordings) of one split, selected by energy-rank
    round robin; and the number of groups."""
    groups: dict[str, tuple[list[np.ndarray], list[tuple[str, ...]]]] = {}
    if join:
        streams: dict[str, list[_Recording]] = {}
        for r in recs:
            streams.setdefault(r.group, []).append(r)
        for g, rs in streams.items():
            rs = sorted(rs, key=lambda r: r.order)
            s = np.concatenate([r.signal for r in rs])
            ends = np.cumsum([len(r.signal) for r in rs])
            starts = range(0, len(s) - seq_len + 1, seq_len)
            srcs = [tuple(r.name for r in rs[int(np.searchsorted(ends, i, "right")):
                                             int(np.searchsorted(ends, i + seq_len - 1, "right")) + 1])
                    for i in starts]
            groups[g] = ([s[i:i + seq_len] for i in starts], srcs)
    else:
        for r in recs:
            starts = range(0, len(r.signal) - seq_len + 1, seq_len)
            groups[f"{r.group}/{r.name}"] = ([r.signal[i:i + seq_len] for i in starts], [(r.name,)] * len(starts))
    cand = []
    for gi, (g, (wins, srcs)) in enumerate(groups.items()):
        energy = [float(np.mean(np.square(w, dtype=np.float64))) for w in wins]
        for rank, pos in enumerate(sorted(range(len(wins)), key=lambda i: (-energy[i], i))):
            cand.append((rank, gi, pos, g, wins[pos], srcs[pos]))
    cand.sort(key=lambda c: (c[0], c[1]))
    if budget is not None:
        cand = cand[:budget]
    cand.sort(key=lambda c: (c[1], c[2]))
    return [(g, pos, w, src) for _, _, pos, g, w, src in cand], len(groups)


def _build(name: str, title: str, recs: list[_Recording], rate: int, seq_len: int, join: bool,
           max_sequences: int | None, files: dict, meta_extra: dict) -> SequenceDataset:
    if seq_len < N_IN + N_OUT:
        raise DataError(f"sequence length {seq_len} is shorter than one step ({N_IN + N_OUT} samples)")
    by_split = {s: [r for r in recs if r.split == s] for s in SPLITS}
    for s, rs in by_split.items():
        if not rs:
            raise DataError(f"{name}: the {s} split has no recordings")
    budgets = _budgets(max_sequences, {s: len(rs) for s, rs in by_split.items()})
    cut = {s: _cut(by_split[s], seq_len, join, budgets[s]) for s in SPLITS}
    for s, (seqs, _) in cut.items():
        if not seqs:
            raise DataError(f"{name}: the {s} split has no sequence of {seq_len} samples (its recordings are "
                            f"shorter{'' if join else '; join them (join=True)'})")
    train_audio = np.concatenate([c[2] for c in cut["train"][0]])
    mean, std = float(np.mean(train_audio)), float(np.std(train_audio))
    if not std > 0:
        raise DataError(f"{name}: the train audio is constant (std 0); cannot normalise")
    norm = {"scale": 32768, "mean": mean, "std": std, "fitted_on": "train",
            "formula": "z = (int16/32768 - mean) / std"}
    splits = {s: [frame(normalise(c[2], norm)) for c in cut[s][0]] for s in SPLITS}
    meta = {
        "title": title, "rate": int(rate), "seq_len": int(seq_len), "join": bool(join),
        "max_sequences": max_sequences, "budgets": budgets,
        "frame": {"input": N_IN, "output": N_OUT, "stride": STRIDE,
                  "rule": "step t reads s[10t:10t+20] and predicts s[10t+20:10t+30]"},
        "norm": norm,
        "recordings": {s: len(by_split[s]) for s in SPLITS},
        "groups": {s: cut[s][1] for s in SPLITS},
        "sequences": {s: len(splits[s]) for s in SPLITS},
        "steps_per_sequence": num_steps(seq_len),
        **meta_extra,
    }
    ds = SequenceDataset(name=name, kind="speech", input_size=N_IN, target_size=N_OUT, splits=splits,
                         files=files, meta=meta)
    # Where each sequence came from (not in meta, which is saved with every model): split -> one
    # {"group", "position" (window index in the group), "recordings" (file names it holds audio of)}
    # per sequence, in the order of ds.splits[split].
    ds.provenance = {s: [{"group": c[0], "position": c[1], "recordings": list(c[3])} for c in cut[s][0]]
                     for s in SPLITS}
    return ds


def load_fsdd(variant: str = "fsdd-a", data_dir=None, *, download: bool = True, mirror: str | None = None,
              max_sequences: int | None = -1, seq_len: int | None = None, **_ignored) -> SequenceDataset:
    """fsdd-a / fsdd-b (see the module docstring). ``max_sequences``: -1 = the variant's cap
    (7,230 / 800), None = no cap. ``seq_len`` overrides the variant's sequence length."""
    v = FSDD_VARIANTS[variant]
    folder = find_fsdd(data_dir, download=download, mirror=mirror)
    recs = []
    for name in read_manifest():
        m = _FSDD_NAME.match(name)
        digit, speaker, idx = int(m.group(1)), m.group(2), int(m.group(3))
        x, rate = read_audio(folder / name)
        if rate != FSDD_RATE:
            raise DataError(f"{folder / name}: expected {FSDD_RATE} Hz, got {rate} Hz")
        recs.append(_Recording(fsdd_split(name), speaker, (idx, digit), name, x))
    recs.sort(key=lambda r: (r.group, r.order))
    cap = v.max_sequences if max_sequences == -1 else max_sequences
    return _build(variant, v.title, recs, FSDD_RATE, seq_len or v.seq_len, v.join, cap,
                  {str(folder): MANIFEST_SHA256},
                  {"source": f"FSDD {FSDD_TAG} ({len(recs)} recordings verified against fsdd_wav.sha256, "
                             f"sha256 {MANIFEST_SHA256})",
                   "folder": str(folder), "license": FSDD_LICENSE,
                   "split_rule": "test: take 0-4, valid: 5-9, train: 10-49 (every speaker in every split)"})


# ------------------------------------------------------------------------------ user folders
_WAV_OPTIONS = {"seq_len", "rate", "join", "max_sequences"}
_SPLIT_DIRS = {"train": ("train",), "valid": ("valid", "val", "validation", "dev"), "test": ("test",)}


def parse_wav_name(name: str) -> tuple[Path, dict]:
    """'wav:/data/clips?seq_len=8000&rate=native&join=1' -> (absolute folder, options)."""
    s = str(name).strip()
    if not s.lower().startswith("wav:"):
        raise DataError(f"{name!r} is not a wav: dataset name")
    body, opts = s[4:], {}
    if "?" in body:
        head, _, query = body.rpartition("?")
        pairs = [q.split("=", 1) for q in query.split("&") if q]
        if pairs and all(len(p) == 2 and p[0] in _WAV_OPTIONS for p in pairs):
            body = head
            for k, val in pairs:
                if k == "rate":
                    opts[k] = "native" if val.lower() == "native" else _int_opt(name, k, val)
                elif k == "join":
                    if val.lower() not in ("0", "1", "true", "false", "yes", "no", "auto"):
                        raise DataError(f"{name!r}: join must be 0/1/auto, got {val!r}")
                    opts[k] = None if val.lower() == "auto" else val.lower() in ("1", "true", "yes")
                elif k == "max_sequences" and val.lower() in ("none", "all"):
                    opts[k] = None
                else:
                    opts[k] = _int_opt(name, k, val)
    if not body:
        raise DataError(f"{name!r}: give a folder, e.g. wav:/path/to/wavs")
    return Path(body).expanduser().absolute(), opts


def _int_opt(name, key, val) -> int:
    try:
        v = int(val)
    except ValueError:
        raise DataError(f"{name!r}: {key} must be a positive integer, got {val!r}") from None
    if v <= 0:
        raise DataError(f"{name!r}: {key} must be a positive integer, got {val!r}")
    return v


def _fmt_opt(key: str, v) -> str:
    if key == "join":
        return "auto" if v is None else "1" if v else "0"
    return "none" if v is None else str(v)


def canonical_wav_name(name: str) -> str:
    """'wav:~/clips?rate=16000' -> 'wav:/home/me/clips?rate=16000' (absolute folder, sorted options)."""
    folder, opts = parse_wav_name(name)
    q = "&".join(f"{k}={_fmt_opt(k, v)}" for k, v in sorted(opts.items()))
    return f"wav:{folder}" + (f"?{q}" if q else "")


def load_wav_folder(path, seq_len: int = 500, *, rate: int | str | None = FSDD_RATE, join: bool | None = None,
                    max_sequences: int | None = None, name: str | None = None) -> SequenceDataset:
    """A speech dataset (same framing and normalisation as fsdd-a/b) from a folder of WAV files.

    - Files: every *.wav below ``path`` (recursively, case-insensitive suffix), sorted by relative path.
    - Split: if ``path`` has train/, valid/ (or val/, validation/, dev/) and test/ sub-folders, those;
      otherwise by file: files ranked by sha256 of their relative path, the first 10% (at least 1) are
      test, the next 10% (at least 1) valid, the rest train. A file is never in two splits.
    - ``rate``: resample every file to this rate (default 8000 Hz); "native" or None keeps the files'
      rate, which must then be the same for all files. Stereo is averaged to mono.
    - ``seq_len``: samples per sequence. ``join``: join the files of one sub-folder (within a split,
      in path order) into one stream before cutting — needed when files are shorter than ``seq_len``;
      None (auto) joins when any file is shorter than ``seq_len``.
    - ``max_sequences``: cap over all splits (None: all windows), selected as for FSDD.
    - Unreadable, empty or non-audio files raise DataError naming the file.
    """
    folder = Path(path).expanduser().absolute()
    if not folder.is_dir():
        raise DataNotFoundError(f"WAV folder {folder} does not exist or is not a folder")
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".wav"),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise DataNotFoundError(f"no .wav files in {folder}")
    rels = [PurePosixPath(p.relative_to(folder).as_posix()) for p in files]
    sub = {s: [d for d in names if (folder / d).is_dir()] for s, names in _SPLIT_DIRS.items()}
    if all(sub.values()):
        split_of = {}
        for r in rels:
            top = r.parts[0] if len(r.parts) > 1 else ""
            split_of[str(r)] = next((s for s, ds in sub.items() if top in ds), None)
        split_rule = "sub-folders train/valid/test"
    else:
        if len(files) < 3:
            raise DataError(f"{folder} holds {len(files)} .wav file(s); at least 3 are needed for train/valid/test")
        ranked = sorted(rels, key=lambda r: hashlib.sha256(str(r).encode()).hexdigest())
        n_test = n_valid = max(1, round(0.1 * len(ranked)))
        split_of = {str(r): "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
                    for i, r in enumerate(ranked)}
        split_rule = "by file: ranked by sha256 of the relative path, 10% test, 10% valid, 80% train"
    target = None if rate in (None, "native") else int(rate)
    recs, rates = [], set()
    for p, r in zip(files, rels):
        split = split_of[str(r)]
        if split is None:
            continue  # a file outside train/valid/test sub-folders
        x, sr = read_audio(p, target)
        rates.add(sr)
        recs.append(_Recording(split, str(r.parent), (str(r),), str(r), x))
    if len(rates) > 1:
        raise DataError(f"{folder}: the files have different sample rates {sorted(rates)}; pass a target rate "
                        "(rate=8000, or wav:...?rate=8000) to resample them")
    sr = rates.pop()
    if join is None:
        join = any(len(r.signal) < seq_len for r in recs)
    digest = hashlib.sha256()
    file_sums = {}
    for p in files:
        file_sums[str(p)] = sha256_file(p)
        digest.update(f"{file_sums[str(p)]}  {p.relative_to(folder).as_posix()}\n".encode())
    opts = {"seq_len": seq_len, "rate": "native" if target is None else target, "join": join,
            "max_sequences": max_sequences}
    return _build(name or canonical_wav_name(f"wav:{folder}"), f"WAV folder {folder}", recs, sr, seq_len, join,
                  max_sequences, file_sums,
                  {"source": f"{len(recs)} WAV files in {folder}", "folder": str(folder),
                   "files_digest": digest.hexdigest(), "split_rule": split_rule, "options": opts})


def load_wav_dataset(name: str, data_dir=None, *, fmt="auto", width="88", download=True, mirror=None, **kw):
    folder, opts = parse_wav_name(name)
    opts.update({k: v for k, v in kw.items() if k in _WAV_OPTIONS})
    return load_wav_folder(folder, name=canonical_wav_name(name), **opts)


# ------------------------------------------------------------------------------ statistics
def speech_stats(ds: SequenceDataset) -> list[dict]:
    """One row per split plus "all": sequences, steps, samples (covered by the framing), seconds."""
    if ds.kind != "speech":
        raise DataError(f"speech_stats is for speech datasets, got kind {ds.kind!r}")
    rate = int(ds.meta.get("rate", FSDD_RATE))
    rows, tot = [], {"sequences": 0, "steps": 0, "samples": 0, "recordings": 0}
    for split in SPLITS:
        pairs = ds.splits.get(split, [])
        steps = [len(y) for _, y in pairs]
        samples = sum(STRIDE * (t - 1) + N_IN + N_OUT for t in steps if t > 0)
        row = {"dataset": ds.name, "split": split, "recordings": ds.meta.get("recordings", {}).get(split),
               "sequences": len(pairs), "steps": int(sum(steps)), "samples": int(samples),
               "seconds": samples / rate, "rate": rate, "seq_len": ds.meta.get("seq_len")}
        rows.append(row)
        for k in tot:
            tot[k] += row[k] or 0
    rows.append({"dataset": ds.name, "split": "all", **tot, "seconds": tot["samples"] / rate, "rate": rate,
                 "seq_len": ds.meta.get("seq_len")})
    return rows


def format_speech_stats(rows: list[dict], header: bool = True) -> str:
    out = []
    if header:
        out += ["| dataset | split | recordings | sequences | steps | samples | seconds |",
                "|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = "" if r.get("recordings") is None else f"{r['recordings']:,}"
        out.append(f"| {r['dataset']} | {r['split']} | {rec} | {r['sequences']:,} | {r['steps']:,} | "
                   f"{r['samples']:,} | {r['seconds']:,.1f} |")
    return "\n".join(out)
