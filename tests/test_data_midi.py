"""midi:FOLDER datasets (gatedrnn.data.midi): piano rolls, options, split, cache, errors, CLI."""
from __future__ import annotations

import hashlib
import json
import re
import shutil

import mido
import numpy as np
import pretty_midi
import pytest
import torch

import gatedrnn.data.midi as midi
from gatedrnn.data import DataError, canonical_name, load_dataset
from gatedrnn.data.music import roll_to_pairs

C4, E4, G4 = 60, 64, 67
COL = {p: p - 21 for p in (C4, E4, G4, 62)}


@pytest.fixture(autouse=True)
def _own_cache(own_cache):
    pass


def write_midi(path, notes, tempo=120.0, drums=(), program=0):
    """notes: [(pitch, start seconds, end seconds)]; drums: the same, on a drum track."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    for is_drum, ns in ((False, notes), (True, drums)):
        if ns:
            inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
            inst.notes += [pretty_midi.Note(velocity=80, pitch=p, start=a, end=b) for p, a, b in ns]
            pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def make_folder(root, n=6, tempo=90.0, frames=24, seed=0):
    """n short pieces (random chords on an eighth-note grid) in two sub-folders."""
    rng = np.random.default_rng(seed)
    eighth = 60.0 / tempo / 2
    for i in range(n):
        notes = [(int(p), t * eighth, (t + int(rng.integers(1, 3))) * eighth)
                 for t in range(0, frames, 2) for p in rng.choice([48, 55, 60, 64, 67, 72], size=2, replace=False)]
        write_midi(root / ("a" if i % 2 else "b") / f"piece{i}.mid", notes, tempo=tempo)
    return root


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------ piano rolls
def test_eighth_note_roll_is_exact(tmp_path):
    # 120 bpm: a quarter note (0.5 s) is 2 eighth frames. C4 quarter, E4 eighth, G4 eighth; a drum hit and
    # a note below the piano (MIDI 10) are left out.
    f = write_midi(tmp_path / "p.mid", [(C4, 0.0, 0.5), (E4, 0.5, 0.75), (G4, 0.75, 1.0), (10, 0.0, 0.25)],
                   drums=[(36, 0.0, 1.5)])
    roll, secs, dropped = midi.midi_to_roll(f)
    want = np.zeros((4, 88), np.uint8)
    want[0:2, COL[C4]] = want[2, COL[E4]] = want[3, COL[G4]] = 1
    assert roll.dtype == np.uint8 and np.array_equal(roll, want)
    assert (secs, dropped) == (0.25, 1)
    q, qs, _ = midi.midi_to_roll(f, "quarter")
    # in quarter notes G4 starts at step 1.5: rounded (ties up) to 2, and it still lasts one step
    assert qs == 0.5 and np.array_equal(q[:, [COL[C4], COL[E4], COL[G4]]], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    s, _, _ = midi.midi_to_roll(f, "sixteenth")
    assert s.shape == (8, 88) and s[:, COL[C4]].tolist() == [1] * 4 + [0] * 4
    slow = write_midi(tmp_path / "slow.mid", [(C4, 0.0, 1.0)], tempo=60)     # 60 bpm: a quarter is 1 s
    r, secs, _ = midi.midi_to_roll(slow)
    assert r.shape == (2, 88) and r[:, COL[C4]].all() and secs == 0.5


def test_eighth_note_step_follows_tempo_changes(tmp_path):
    # Two quarter notes, the second after a change from 120 to 60 bpm: 0–0.5 s and 0.5–1.5 s. In
    # eighth notes each lasts 2 frames; in seconds (step 0.25) the second one lasts 4.
    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    tr += [mido.MetaMessage("set_tempo", tempo=500000, time=0), mido.Message("note_on", note=C4, velocity=80, time=0),
           mido.Message("note_off", note=C4, time=480), mido.MetaMessage("set_tempo", tempo=1000000, time=0),
           mido.Message("note_on", note=62, velocity=80, time=0), mido.Message("note_off", note=62, time=480)]
    f = tmp_path / "tempo.mid"
    mf.save(str(f))
    roll, secs, _ = midi.midi_to_roll(f)
    assert secs == 0.25 and roll.shape == (4, 88)                # frame seconds: at the first tempo
    assert roll[:, COL[C4]].tolist() == [1, 1, 0, 0] and roll[:, COL[62]].tolist() == [0, 0, 1, 1]
    sec, _, _ = midi.midi_to_roll(f, 0.25)
    assert sec[:, COL[C4]].tolist() == [1, 1, 0, 0, 0, 0] and sec[:, COL[62]].tolist() == [0, 0, 1, 1, 1, 1]


def test_dataset_pairs_and_seconds_step(tmp_path):
    d = tmp_path / "songs"
    for i, p in enumerate((C4, E4, G4)):
        write_midi(d / f"{i}.mid", [(p, 0.0, 0.5), (C4, 0.5, 0.75)])
    ds = load_dataset(f"midi:{d}")
    assert (ds.kind, ds.input_size, ds.target_size) == ("music", 88, 88)
    assert sorted(len(ds.splits[s]) for s in ("train", "valid", "test")) == [1, 1, 1]
    assert ds.meta["lowest_pitch"] == 21 and ds.meta["frame_seconds"] == 0.25 and ds.meta["step"] == "eighth"
    assert set(ds.files) == {str(d.resolve() / f"{i}.mid") for i in range(3)}
    for s in ("train", "valid", "test"):
        x, y = ds.splits[s][0]
        rel = ds.provenance[s][0]
        want = np.zeros((3, 88), np.uint8)
        want[0:2, COL[(C4, E4, G4)[int(rel[0])]]] = 1
        want[2, COL[C4]] = 1
        assert y.dtype == x.dtype == np.uint8 and np.array_equal(y, want)
        assert all(np.array_equal(a, b) for a, b in zip((x, y), roll_to_pairs(want)))  # the music convention
        assert not x[0].any()
    fine = load_dataset(f"midi:{d}?step=0.125")
    assert fine.name == f"midi:{d.resolve()}?step=0.125" and fine.meta["frame_seconds"] == 0.125
    y = fine.splits["train"][0][1]
    assert y.shape == (6, 88) and y[:4].sum() == 4 and y[4:, COL[C4]].tolist() == [1, 1]
    assert np.array_equal(load_dataset(f"midi:{d}", step=0.125).splits["train"][0][1], y)   # keyword = option


def test_canonical_names(tmp_path, monkeypatch):
    from gatedrnn.train import TrainConfig
    monkeypatch.chdir(tmp_path)
    d = (tmp_path / "m").resolve()
    assert canonical_name("midi:m") == canonical_name(f"MIDI:{d}/") == f"midi:{d}"
    # defaults are dropped, the rest sorted; 80/10/10 is the default split written as weights
    assert canonical_name("midi:m?split=80/10/10&step=eighth&on_error=raise") == f"midi:{d}"
    name = canonical_name("midi:m?on_error=skip&step=0.125&split=2/1/1")
    assert name == f"midi:{d}?on_error=skip&split=0.5/0.25/0.25&step=0.125"
    assert canonical_name(name) == name and canonical_name("midi:m?step=QUARTER") == f"midi:{d}?step=quarter"
    assert TrainConfig(dataset="midi:m?step=0.125").dataset == f"midi:{d}?step=0.125"
    for bad in ("midi:m?step=-1", "midi:m?step=half", "midi:m?split=0.8,0.1,0.1", "midi:m?split=1/0/1",
                "midi:m?on_error=ignore", "midi:m?tempo=90", "midi:"):
        with pytest.raises(DataError):
            canonical_name(bad)


# ------------------------------------------------------------------------------ split
def test_split_rule_is_a_hash_of_the_relative_path():
    names = [f"set{i % 3}/song{i}.mid" for i in range(60)]
    got, rule = midi.split_of(names)
    assert rule.startswith("by hash")
    for r in names:
        u = int(hashlib.sha256(r.encode()).hexdigest()[:16], 16) / 2 ** 64
        assert got[r] == ("train" if u < 0.8 else "valid" if u < 0.9 else "test")
    more, _ = midi.split_of(names + ["new/one.mid"])            # adding a file moves no other file
    assert {r: more[r] for r in names} == got
    # small folders: ranked by the hash, each split at least one file
    for n in (3, 4, 5):
        small, rule = midi.split_of(names[:n])
        assert set(small.values()) == {"train", "valid", "test"}
    with pytest.raises(DataError, match="at least 3"):
        midi.split_of(names[:2])


def test_split_is_deterministic_and_independent_of_the_folder(tmp_path):
    a = make_folder(tmp_path / "here", n=8, frames=4)
    b = shutil.copytree(a, tmp_path / "elsewhere" / "copy")
    first, again, moved = load_dataset(f"midi:{a}"), load_dataset(f"midi:{a}"), load_dataset(f"midi:{b}")
    assert first.provenance == again.provenance == moved.provenance
    assert all(first.provenance[s] for s in ("train", "valid", "test"))
    assert sum(map(len, first.provenance.values())) == 8
    assert first.meta["files_digest"] == moved.meta["files_digest"]
    for s in ("train", "valid", "test"):
        assert all(np.array_equal(x[1], y[1]) for x, y in zip(first.splits[s], moved.splits[s]))


# ------------------------------------------------------------------------------ cache
def test_cache_is_used_and_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    d = make_folder(tmp_path / "m", n=4, frames=4)
    first = load_dataset(f"midi:{d}")
    cached = sorted((tmp_path / "cache" / "midi").iterdir())
    assert len(cached) == 4 and all(p.suffix == ".npz" and not p.name.startswith(".tmp") for p in cached)
    np.load(cached[0], allow_pickle=False)["roll"]          # plain arrays, no pickle

    calls = []
    real = midi.midi_to_roll

    def counting(path, step="eighth"):
        calls.append(path.name)
        return real(path, step)
    monkeypatch.setattr(midi, "midi_to_roll", counting)
    second = load_dataset(f"midi:{d}")
    assert calls == []                                       # every roll came from the cache
    assert second.provenance == first.provenance
    assert all(np.array_equal(a[1], b[1]) for s in first.splits for a, b in zip(first.splits[s], second.splits[s]))

    changed = write_midi(d / "b" / "piece0.mid", [(C4, 0.0, 2.0)], tempo=90)    # new content, same name
    third = load_dataset(f"midi:{d}")
    assert calls == ["piece0.mid"]
    split = next(s for s, rels in third.provenance.items() if "b/piece0.mid" in rels)
    y = third.splits[split][third.provenance[split].index("b/piece0.mid")][1]
    assert y.shape == (6, 88) and y[:, COL[C4]].all()
    assert third.files[str(changed.resolve())] == hashlib.sha256(changed.read_bytes()).hexdigest()

    load_dataset(f"midi:{d}?step=0.1")                       # another step: another cache entry
    assert len(calls) == 5
    sha = hashlib.sha256((d / "a" / "piece1.mid").read_bytes()).hexdigest()
    in_use = tmp_path / "cache" / "midi" / f"v1-{sha}-eighth.npz"
    in_use.write_bytes(b"garbage")                           # a damaged entry is parsed again
    calls.clear()
    load_dataset(f"midi:{d}")
    assert len(calls) == 1


# ------------------------------------------------------------------------------ errors
def test_bad_files_raise_or_are_skipped(tmp_path):
    d = make_folder(tmp_path / "m", n=3, frames=4)
    (d / "bad.mid").write_bytes(b"this is not a MIDI file")
    with pytest.raises(DataError, match=r"bad\.mid.*not a readable MIDI file"):
        load_dataset(f"midi:{d}")
    with pytest.warns(UserWarning, match=r"bad\.mid"):
        ds = load_dataset(f"midi:{d}?on_error=skip")
    assert [s["file"] for s in ds.meta["skipped"]] == ["bad.mid"]
    assert not any("bad.mid" in f for f in ds.files) and sum(map(len, ds.provenance.values())) == 3

    (d / "bad.mid").unlink()
    write_midi(d / "drums.midi", [], drums=[(36, 0.0, 1.0)])   # only drums: no notes
    with pytest.raises(DataError, match=r"drums\.midi: holds no notes"):
        load_dataset(f"midi:{d}")
    with pytest.warns(UserWarning, match="drums.midi"):
        assert len(load_dataset(f"midi:{d}", on_error="skip").files) == 3


def test_empty_missing_and_too_small_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no midi here")
    with pytest.raises(DataError, match=re.escape(f"no .mid/.midi files in {empty.resolve()}")):
        load_dataset(f"midi:{empty}")
    with pytest.raises(DataError, match=re.escape(f"{(tmp_path / 'nope').resolve()} does not exist")):
        load_dataset(f"midi:{tmp_path / 'nope'}")
    one = make_folder(tmp_path / "one", n=1, frames=4)
    with pytest.raises(DataError, match=re.escape(str(one.resolve())) + r".*1 usable MIDI file.*at least 3"):
        load_dataset(f"midi:{one}")
    with pytest.raises(DataError, match="width 88"):
        load_dataset(f"midi:{one}", width="paper")


# ------------------------------------------------------------------------------ command line
@pytest.fixture
def music_folder(tmp_path):
    return make_folder(tmp_path / "my songs", n=6, tempo=90.0)      # 90 bpm: an eighth note is 1/3 s


def test_train_every_unit_and_sample(music_folder, tmp_path, one_thread, capsys):
    from gatedrnn.cli import main
    name = f"midi:{music_folder}"
    for unit in ("gru", "tanh", "lstm"):
        out = tmp_path / "runs" / unit
        assert main(["train", "--dataset", name, "--unit", unit, "--epochs", "2", "--batch-size", "2",
                     "--out", str(out), "--no-progress"]) == 0
        res = json.loads((out / "result.json").read_text())
        assert res["dataset"] == canonical_name(name) and res["kind"] == "music" and res["epochs"] == 2
        assert np.isfinite(res["test_nll"])
    spec = json.loads((tmp_path / "runs" / "gru" / "model.json").read_text())
    assert spec["meta"]["frame_seconds"] == pytest.approx(1 / 3)
    mid = tmp_path / "s.mid"
    assert main(["sample", str(tmp_path / "runs" / "gru"), "--out", str(mid), "--steps", "16"]) == 0
    pm = pretty_midi.PrettyMIDI(str(mid))
    assert pm.get_tempo_changes()[1][0] == pytest.approx(90.0, rel=1e-4)   # at the data's speed (integer µs/beat)
    starts = np.array([n.start for n in pm.instruments[0].notes]) / (1 / 3)
    assert np.allclose(starts, np.round(starts), atol=1e-3)
    capsys.readouterr()


def test_data_stats_and_reproduce_accept_midi_names(music_folder, tmp_path, capsys):
    from gatedrnn.cli import main
    name = f"midi:{music_folder}?step=0.25&split=70/15/15"
    assert main(["data", "stats", name]) == 0
    out = capsys.readouterr().out
    canon = canonical_name(name)
    for split in ("train", "valid", "test", "all"):
        assert f"| {split} |" in out
    assert canon in out and "one frame per 0.25 s" in out
    assert main(["data", "stats", name, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["sequences"] for r in rows if r["split"] != "all") == 6
    assert main(["reproduce", "--datasets", f"{name},jsb", "--dry-run", "--out", str(tmp_path / "res")]) == 0
    assert json.loads(capsys.readouterr().out)["datasets"][0] == canon
    assert main(["data", "verify", "--dataset", name]) == 0                 # nothing registered to check
    assert f"{canon}: your own folder" in capsys.readouterr().err
    assert main(["data", "download", name]) == 0
    assert "nothing to download" in capsys.readouterr().out


def test_cli_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    from gatedrnn.cli import main
    missing = tmp_path / "nowhere"
    for argv in (["data", "stats", f"midi:{missing}"],
                 ["train", "--dataset", f"midi:{missing}", "--epochs", "1", "--out", str(tmp_path / "r")],
                 ["data", "stats", f"midi:{tmp_path}?step=slow"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert str(missing) in err or "step" in err
