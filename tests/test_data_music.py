"""Music data: statistics against shared/data/README.md, formats, widths, validation, restricted unpickling."""
from __future__ import annotations

import builtins
import os
import pickle
import pickletools

import numpy as np
import pytest
import scipy.io

from _paths import data_dir, music_file
from gatedrnn.data import (ChecksumError, DataError, DataNotFoundError, SequenceDataset, canonical_name,
                           load_dataset)
from gatedrnn.data import music
from gatedrnn.data.music import dataset_stats, read_mat, read_pickle, restricted_load

# shared/data/README.md, "Measured statistics":
# split: (sequences, len min, len mean (1 decimal), len max, time steps, pitch min, pitch max,
#         mean notes/step (3 decimals), empty steps)
README = {
    "jsb": {
        "train": (229, 25, 60.3, 129, 13807, 43, 96, 3.898, 18),
        "valid": (76, 32, 60.6, 144, 4602, 48, 96, 3.870, 29),
        "test": (77, 32, 61.4, 160, 4725, 45, 96, 3.887, 17),
        "all": (382, 25, 60.6, 160, 23134, 43, 96, 3.890, 64),
    },
    "nottingham": {
        "train": (694, 40, 254.4, 1788, 176561, 31, 93, 3.961, 487),
        "valid": (173, 96, 263.1, 1473, 45513, 34, 91, 3.959, 51),
        "test": (170, 63, 261.5, 1793, 44463, 36, 89, 3.990, 19),
        "all": (1037, 40, 257.0, 1793, 266537, 31, 93, 3.966, 557),
    },
    "musedata": {
        "train": (524, 9, 467.9, 3457, 245202, 21, 96, 3.493, 12962),
        "valid": (135, 63, 613.0, 3723, 82755, 21, 100, 3.479, 4412),
        "test": (124, 45, 518.9, 4273, 64339, 21, 105, 3.293, 5042),
        "all": (783, 9, 501.0, 4273, 392296, 21, 105, 3.457, 22416),
    },
    "piano": {
        "train": (87, 111, 872.5, 3857, 75911, 21, 108, 3.044, 4917),
        "valid": (12, 209, 711.7, 1637, 8540, 24, 104, 3.235, 251),
        "test": (25, 65, 761.4, 2645, 19036, 21, 108, 2.945, 652),
        "all": (124, 65, 834.6, 3857, 103487, 21, 108, 3.042, 5820),
    },
}
MAX_NOTES = {"jsb": 4, "nottingham": 9, "musedata": 15, "piano": 12}
PAPER_WIDTH = {"jsb": 96, "nottingham": 93, "musedata": 105, "piano": 108}

_CACHE: dict = {}


def load(name, fmt="mat", width="88") -> SequenceDataset:
    """Load once per test session (the data are read-only); never downloads."""
    key = (name, fmt, width)
    if key not in _CACHE:
        _CACHE[key] = load_dataset(name, data_dir(), fmt=fmt, width=width, download=False)
    return _CACHE[key]


@pytest.fixture(autouse=True)
def _isolated(data_env, monkeypatch):
    monkeypatch.setenv("GATEDRNN_OFFLINE", "1")


def _check_stats(ds, name):
    rows = {r["split"]: r for r in dataset_stats(ds)}
    assert list(rows) == ["train", "valid", "test", "all"]
    for split, (n, lmin, lmean, lmax, steps, pmin, pmax, notes, empty) in README[name].items():
        r = rows[split]
        got = (r["sequences"], r["len_min"], round(r["len_mean"], 1), r["len_max"], r["time_steps"],
               r["pitch_min"], r["pitch_max"], round(r["mean_notes_per_step"], 3), r["empty_steps"])
        assert got == (n, lmin, lmean, lmax, steps, pmin, pmax, notes, empty), (name, split)
        assert ds.num_steps(split) == steps if split != "all" else True
    assert rows["all"]["max_notes_per_step"] == MAX_NOTES[name]


# ----------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("name", ["jsb", "nottingham", "musedata", "piano"])
def test_stats_match_readme_mat(name):
    ds = load(name, "mat")
    assert ds.name == name and ds.kind == "music"
    assert ds.input_size == ds.target_size == 88
    assert ds.meta["format"] == "mat" and ds.meta["lowest_pitch"] == 21 and ds.meta["width"] == 88
    assert ds.meta["checksum_status"] == "ok"
    (path, sha), = ds.files.items()
    assert os.path.isabs(path) and path.endswith(music.MUSIC_SETS[name].mat)
    assert len(sha) == 64
    _check_stats(ds, name)


def test_jsb_stats_match_readme_pickle_and_rolls_equal_mat():
    p, m = load("jsb", "pickle"), load("jsb", "mat")
    assert p.meta["format"] == "pickle" and list(p.files)[0].endswith("jsb_chorales.pickle")
    assert list(p.files.values())[0] == "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c"
    _check_stats(p, "jsb")
    for split in ("train", "valid", "test"):
        assert len(p.splits[split]) == len(m.splits[split])
        for (xp, yp), (xm, ym) in zip(p.splits[split], m.splits[split]):
            assert yp.dtype == ym.dtype == np.uint8
            np.testing.assert_array_equal(yp, ym)
            np.testing.assert_array_equal(xp, xm)


def test_auto_prefers_mat():
    ds = load_dataset("JSB_Chorales", data_dir(), download=False)
    assert ds.meta["format"] == "mat"


def test_pairs_are_shifted_rolls():
    ds = load("jsb")
    for x, y in ds.splits["valid"]:
        assert x.dtype == y.dtype == np.uint8 and x.shape == y.shape and y.shape[1] == 88
        assert not x[0].any()                      # zero start frame
        np.testing.assert_array_equal(x[1:], y[:-1])
        assert set(np.unique(y)) <= {0, 1}
    # the 88-key mapping: column c is MIDI pitch c + 21 -> JSB's highest pitch 96 is column 75
    allcols = np.concatenate([y for _, y in ds.splits["train"]]).any(0)
    assert allcols[96 - 21] and not allcols[96 - 21 + 1:].any()


# ----------------------------------------------------------------------------- paper width
@pytest.mark.parametrize("name", ["jsb", "nottingham", "musedata", "piano"])
def test_paper_width_is_highest_note_and_maps_c_plus_1(name):
    w = PAPER_WIDTH[name]
    p, s = load(name, "mat", "paper"), load(name, "mat", "88")
    assert p.input_size == p.target_size == w
    assert p.meta["lowest_pitch"] == 1 and p.meta["width"] == w and p.meta["width_mode"] == "paper"
    for split in ("train", "valid", "test"):
        for (xp, yp), (_, ys) in zip(p.splits[split], s.splits[split]):
            assert yp.shape == (len(ys), w)
            assert not yp[:, :20].any()                       # MIDI 1..20 never sound
            np.testing.assert_array_equal(yp[:, 20:], ys[:, : w - 20])   # pitch c+1 == pitch (c-20)+21
            assert not ys[:, w - 20:].any()
            np.testing.assert_array_equal(xp[1:], yp[:-1])
    rows = {r["split"]: r for r in dataset_stats(p)}
    assert rows["all"]["pitch_max"] == w == README[name]["all"][6]      # the last column is used
    assert rows["all"]["pitch_min"] == README[name]["all"][5]


def test_jsb_paper_width_pickle_equals_mat():
    p, m = load("jsb", "pickle", "paper"), load("jsb", "mat", "paper")
    assert p.input_size == 96
    for split in ("train", "test"):
        for (_, a), (_, b) in zip(p.splits[split], m.splits[split]):
            np.testing.assert_array_equal(a, b)
    # every sounding MIDI pitch m is column m - 1 in the paper width (and m - 21 in the 88-key roll)
    raw = read_pickle(music_file("jsb_chorales.pickle"))["train"][0]
    y96 = p.splits["train"][0][1]
    assert y96.sum() == sum(len(step) for step in raw)
    for t, step in enumerate(raw):
        for m in step:
            assert y96[t, m - 1] == 1


def test_paper_width_refuses_notes_above_width():
    roll = np.zeros((3, 88), np.uint8)
    roll[1, 97 - 21] = 1                                   # MIDI 97 does not fit JSB's width 96
    with pytest.raises(DataError, match="97"):
        music._to_paper_width([roll], 96, "x.mat: field 'traindata'")
    with pytest.raises(DataError, match="outside"):
        music.rolls_from_pitches([[[97]]], 1, 96, "x.pickle: field 'train'")


def test_bad_width_and_format():
    with pytest.raises(DataError, match="width"):
        load_dataset("jsb", data_dir(), width="100", download=False)
    with pytest.raises(DataError, match="format"):
        load_dataset("jsb", data_dir(), fmt="midi", download=False)


# ----------------------------------------------------------------------------- names
def test_canonical_names():
    for a in ("jsb", "JSB", "jsb_chorales", "JSB Chorales", "jsb-chorales"):
        assert canonical_name(a) == "jsb"
    assert canonical_name("Nottingham") == "nottingham"
    for a in ("musedata", "muse", "MuseData", "muse_data"):
        assert canonical_name(a) == "musedata"
    for a in ("piano", "piano-midi", "piano_midi", "Piano-midi.de"):
        assert canonical_name(a) == "piano"
    with pytest.raises(DataError) as e:
        canonical_name("mnist")
    for n in ("jsb", "nottingham", "musedata", "piano", "mnist"):
        assert n in str(e.value)


def test_missing_pickle_without_download_is_clear(tmp_path):
    with pytest.raises(DataNotFoundError, match="nottingham.pickle"):
        load_dataset("nottingham", tmp_path, fmt="pickle", download=False)
    with pytest.raises(DataNotFoundError, match="Nottingham.mat"):
        load_dataset("nottingham", tmp_path, fmt="auto", download=False)


# ----------------------------------------------------------------------------- restricted unpickler
class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _globals_of(blob: bytes) -> set[str]:
    out = set()
    for op, arg, _ in pickletools.genops(blob):
        if op.name == "GLOBAL":
            out.add(arg)
    return out


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.exec"])
def test_restricted_unpickler_refuses_code_execution(tmp_path, kind, protocol):
    marker = tmp_path / "PWNED"
    if kind == "os.system":
        evil = _Reduce(os.system, (f"touch {marker}",))
    elif kind == "builtins.eval":
        evil = _Reduce(builtins.eval, (f"open({str(marker)!r}, 'w').write('x')",))
    else:
        evil = _Reduce(builtins.exec, (f"open({str(marker)!r}, 'w').write('x')",))
    blob = pickle.dumps({"train": [[[60]], evil], "valid": [], "test": []}, protocol=protocol)
    bad = tmp_path / "jsb_chorales.pickle"
    bad.write_bytes(blob)
    with pytest.raises(DataError, match="refused to unpickle") as e:
        restricted_load(bad)
    assert str(bad) in str(e.value)
    assert not marker.exists()
    with pytest.raises(DataError):
        read_pickle(bad)
    assert not marker.exists()
    # the plain unpickler WOULD run it: proves the test pickle is really malicious
    if kind == "os.system" and protocol == 2:
        assert any("system" in g for g in _globals_of(blob))


def test_restricted_unpickler_refuses_object_dtype_scalar(tmp_path):
    # allowed globals, but an object dtype would turn raw bytes into a pointer: must be refused
    blob = (b"\x80\x02cnumpy.core.multiarray\nscalar\nq\x00cnumpy\ndtype\nq\x01U\x01OK\x00K\x01\x87R"
            b"U\x08AAAAAAAA\x86R.")
    bad = tmp_path / "x.pickle"
    bad.write_bytes(blob)
    with pytest.raises(DataError, match="not an allowed plain numeric dtype"):
        restricted_load(bad)


def test_restricted_unpickler_accepts_real_pickle_with_minimal_globals():
    path = music_file("jsb_chorales.pickle")
    blob = path.read_bytes()
    assert _globals_of(blob) == {"numpy.core.multiarray scalar", "numpy dtype"}
    obj = restricted_load(path)
    assert sorted(obj) == ["test", "train", "valid"]
    first = obj["train"][0][0]
    assert all(isinstance(p, np.int64) for p in first) and all(21 <= p <= 108 for p in first)
    assert set(music.ALLOWED_GLOBALS) == {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                                          ("numpy", "dtype"), ("_codecs", "encode")}


def test_garbage_pickle_is_data_error(tmp_path):
    p = tmp_path / "garbage.pickle"
    p.write_bytes(b"\x80\x02}q\x00(U\x05train")          # truncated
    with pytest.raises(DataError, match="garbage.pickle"):
        restricted_load(p)


@pytest.mark.parametrize("obj, field", [
    ({"train": [], "valid": []}, "'test'"),
    ([1, 2, 3], "dict"),
    ({"train": [[[60, 200]]], "valid": [], "test": []}, "'train'"),
    ({"train": [[[60]]], "valid": [[["C4"]]], "test": []}, "'valid'"),
    ({"train": [[[60]]], "valid": [], "test": [[60]]}, "'test'"),
])
def test_pickle_structure_validation(tmp_path, obj, field):
    p = tmp_path / "bad.pickle"
    p.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataError) as e:
        read_pickle(p)
    assert "bad.pickle" in str(e.value) and field in str(e.value)


def test_unverified_pickle_needs_explicit_permission(tmp_path):
    # a hand-made nottingham.pickle has no registered checksum: refused unless allowed, then reported
    seqs = {"train": [[[60, 64], [], [67]]], "valid": [[[48]]], "test": [[[108], [21]]]}
    (tmp_path / "nottingham.pickle").write_bytes(pickle.dumps(seqs, protocol=2))
    with pytest.raises(DataError, match="unverified"):
        load_dataset("nottingham", tmp_path, fmt="pickle", download=False)
    with pytest.warns(UserWarning):
        ds = load_dataset("nottingham", tmp_path, fmt="pickle", download=False, allow_unverified=True)
    assert ds.meta["checksum_status"] == "unverified" and ds.meta["format"] == "pickle"
    y = ds.splits["train"][0][1]
    assert y.shape == (3, 88) and y[0, 60 - 21] == y[0, 64 - 21] == y[2, 67 - 21] == 1 and y.sum() == 3
    assert ds.splits["test"][0][1][0, 87] == 1 and ds.splits["test"][0][1][1, 0] == 1


# ----------------------------------------------------------------------------- .mat validation
def _good_cell(n=2, cols=88):
    cell = np.empty((1, n), dtype=object)
    for i in range(n):
        r = np.zeros((4 + i, cols), np.uint8)
        r[0, 10] = 1
        cell[0, i] = r
    return cell


def test_read_mat_roundtrip(tmp_path):
    p = tmp_path / "ok.mat"
    scipy.io.savemat(p, {"traindata": _good_cell(3), "validdata": _good_cell(1), "testdata": _good_cell(2)})
    rolls = read_mat(p)
    assert [len(rolls[s]) for s in ("train", "valid", "test")] == [3, 1, 2]
    assert rolls["train"][2].shape == (6, 88) and rolls["train"][2].dtype == np.uint8


def test_corrupt_mat_garbage_bytes(tmp_path):
    p = tmp_path / "JSB_Chorales.mat"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match="JSB_Chorales.mat"):
        read_mat(p)


@pytest.mark.parametrize("case, expect", [
    ("wrong_keys", "traindata"),
    ("wrong_columns", "'validdata'\\[1\\]"),
    ("non_binary", "binary"),
    ("not_cell", "cell"),
])
def test_corrupt_mat_structure(tmp_path, case, expect):
    d = {"traindata": _good_cell(2), "validdata": _good_cell(2), "testdata": _good_cell(2)}
    if case == "wrong_keys":
        d = {"train": d["traindata"], "valid": d["validdata"], "test": d["testdata"]}
    elif case == "wrong_columns":
        d["validdata"][0, 1] = np.zeros((5, 87), np.uint8)
    elif case == "non_binary":
        d["testdata"][0, 0][2, 3] = 2
    elif case == "not_cell":
        d["traindata"] = np.zeros((3, 88), np.uint8)
    p = tmp_path / "Broken.mat"
    scipy.io.savemat(p, d)
    with pytest.raises(DataError, match=expect) as e:
        read_mat(p)
    assert "Broken.mat" in str(e.value)


def test_local_tampered_mat_rejected_by_loader(tmp_path):
    good = music_file("JSB_Chorales.mat").read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "JSB_Chorales.mat").write_bytes(bytes(bad))
    with pytest.raises(ChecksumError) as e:
        load_dataset("jsb", tmp_path, download=False)          # auto must not silently fall back
    assert "JSB_Chorales.mat" in str(e.value) and "ac0e6085" in str(e.value)
