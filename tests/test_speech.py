"""Raw speech: framing, FSDD A/B construction (split, normalisation, sizes), user WAV folders,
the downloader's safety, a short training run whose validation NLL falls, and WAV sampling."""
from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _paths import data_dir
from gatedrnn.data import DataError, ChecksumError, canonical_name, load_dataset
from gatedrnn.data import speech as sp

FSDD = data_dir() / "speech" / "fsdd"


# ------------------------------------------------------------------------------ framing
def test_framing_hand_built():
    s = np.arange(60, dtype=np.float32)
    x, y = sp.frame(s)
    assert x.shape == (4, 20) and y.shape == (4, 10) and x.dtype == np.float32
    for t, (first_in, first_out) in enumerate([(0, 20), (10, 30), (20, 40), (30, 50)]):
        assert x[t].tolist() == list(range(first_in, first_in + 20))
        assert y[t].tolist() == list(range(first_out, first_out + 10))
    x, y = sp.frame(np.arange(59))      # floor((59 - 30) / 10) + 1 = 3: the last 9 samples are unused
    assert len(x) == len(y) == 3 and y[-1, -1] == 49
    for n, t in [(29, 0), (30, 1), (39, 1), (40, 2), (500, 48), (8000, 798)]:
        assert sp.num_steps(n) == t and len(sp.frame(np.zeros(n))[1]) == t
    # consecutive inputs overlap by 10 samples and targets tile the signal after the first 20
    x, y = sp.frame(np.arange(500))
    assert np.array_equal(np.concatenate([x[0], y.reshape(-1)]), np.arange(500))
    from gatedrnn.generate import sequence_audio
    assert np.allclose(sequence_audio(x, y, {"mean": 0.0, "std": 1.0}), np.arange(500))


# ------------------------------------------------------------------------------ FSDD A / B
@pytest.fixture(scope="module")
def fsdd_a():
    return load_dataset("fsdd-a", data_dir())


@pytest.fixture(scope="module")
def fsdd_b():
    return load_dataset("fsdd_B", data_dir())


def test_sizes_kind_and_files(fsdd_a, fsdd_b):
    for ds, n, seq, T, budgets in ((fsdd_a, 7230, 500, 48, (5784, 723, 723)),
                                   (fsdd_b, 800, 8000, 798, (640, 80, 80))):
        assert ds.kind == "speech" and ds.input_size == 20 and ds.target_size == 10
        assert tuple(len(ds.splits[s]) for s in ("train", "valid", "test")) == budgets
        assert sum(budgets) == n and ds.meta["seq_len"] == seq and ds.meta["rate"] == 8000
        for s in ("train", "valid", "test"):
            x, y = ds.splits[s][0]
            assert x.shape == (T, 20) and y.shape == (T, 10) and x.dtype == np.float32
        assert list(ds.files.values()) == [sp.MANIFEST_SHA256]
        json.dumps(ds.meta)  # saved in model.json
        rows = sp.speech_stats(ds)
        assert rows[-1]["sequences"] == n and rows[-1]["samples"] == n * seq
        assert rows[-1]["seconds"] == pytest.approx(n * seq / 8000)
    assert hashlib.sha256(sp.MANIFEST.read_bytes()).hexdigest() == sp.MANIFEST_SHA256
    assert canonical_name("FSDD_A") == "fsdd-a" and canonical_name("ubisoft-b") == "fsdd-b"


def test_split_disjoint_by_recording(fsdd_a, fsdd_b):
    for ds in (fsdd_a, fsdd_b):
        used = {}
        for split, prov in ds.provenance.items():
            assert len(prov) == len(ds.splits[split])
            names = {n for p in prov for n in p["recordings"]}
            assert all(sp.fsdd_split(n) == split for n in names), split
            assert {n.split("_")[1] for n in names} == {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
            used[split] = names
        assert not (used["train"] & used["valid"]) and not (used["train"] & used["test"]) \
            and not (used["valid"] & used["test"])
    # B joins recordings of one speaker within one split: most sequences hold several recordings
    multi = [p for p in fsdd_b.provenance["train"] if len(p["recordings"]) > 1]
    assert len(multi) > 0.9 * len(fsdd_b.provenance["train"])
    assert all(len({n.split("_")[1] for n in p["recordings"]}) == 1 for p in fsdd_b.provenance["train"])


def test_spread_subset_keeps_every_speaker_and_first_does_not(fsdd_a, fsdd_b):
    """FSDD's splits are stored speaker by speaker: the first 1,200 fsdd-a training sequences are one
    speaker's (george; the speech budget's first definition trained on them). `spread` keeps the sequences
    at floor(i·n/N): every speaker, and the provenance follows the selection."""
    speakers = lambda prov: {n.split("_")[1] for p in prov for n in p["recordings"]}
    first, spread = fsdd_a.sliced(1200), fsdd_a.sliced(1200, spread=True)
    assert speakers(first.provenance["train"]) <= {"george", "jackson"}
    assert len(speakers(spread.provenance["train"])) == 6
    n = len(fsdd_a.splits["train"])
    idx = [i * n // 1200 for i in range(1200)]
    assert all(spread.splits["train"][k][0] is fsdd_a.splits["train"][i][0] for k, i in enumerate(idx))
    assert [p["recordings"] for p in spread.provenance["train"]] == \
        [fsdd_a.provenance["train"][i]["recordings"] for i in idx]
    # valid/test hold fewer than N sequences: kept whole, in order
    assert len(spread.splits["valid"]) == len(fsdd_a.splits["valid"]) == 723
    b = fsdd_b.sliced(320, spread=True)     # the speech budget's fsdd-b slice
    assert len(b.splits["train"]) == 320 and len(speakers(b.provenance["train"])) == 6
    assert len(b.splits["valid"]) == 80 and len(b.splits["test"]) == 80


def test_normalisation_is_train_statistics(fsdd_a):
    norm = fsdd_a.meta["norm"]
    assert norm["fitted_on"] == "train" and norm["scale"] == 32768
    # the train sequences, de-normalised, have exactly the fitted mean/std; each is a window of its recording
    audio = [np.concatenate([x[0], y.reshape(-1)]).astype(np.float64) * norm["std"] + norm["mean"]
             for x, y in fsdd_a.splits["train"]]
    allx = np.concatenate(audio)
    assert allx.mean() == pytest.approx(norm["mean"], abs=1e-6) and allx.std() == pytest.approx(norm["std"], rel=1e-5)
    z = np.concatenate([y.reshape(-1) for _, y in fsdd_a.splits["train"]])
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    p = fsdd_a.provenance["train"][7]
    wav, _ = sf.read(FSDD / p["recordings"][0], dtype="int16")
    raw = wav[p["position"] * 500:(p["position"] + 1) * 500] / 32768
    np.testing.assert_allclose(audio[7], raw, atol=1e-6)


def _write(path: Path, signal, rate=8000, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(signal), rate, subtype=subtype)


def _folder(root: Path, amp: dict[str, float], n=3, length=1200):
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        for i in range(n):
            _write(root / split / f"spk{i % 2}" / f"{i}.wav", amp[split] * rng.standard_normal(length).clip(-3, 3) / 4)
    return root


def test_normalisation_ignores_valid_and_test_audio(tmp_path):
    a = sp.load_wav_folder(_folder(tmp_path / "a", {"train": 0.5, "valid": 0.5, "test": 0.5}), seq_len=300)
    b = sp.load_wav_folder(_folder(tmp_path / "b", {"train": 0.5, "valid": 0.05, "test": 0.9}), seq_len=300)
    c = sp.load_wav_folder(_folder(tmp_path / "c", {"train": 0.1, "valid": 0.5, "test": 0.5}), seq_len=300)
    assert a.meta["norm"] == b.meta["norm"]
    assert c.meta["norm"]["std"] != pytest.approx(a.meta["norm"]["std"], rel=0.1)
    assert a.meta["split_rule"] == "sub-folders train/valid/test"
    assert [len(a.splits[s]) for s in ("train", "valid", "test")] == [12, 12, 12]   # 3 files x 4 windows


# ------------------------------------------------------------------------------ user folders
def test_wav_folder_rates_channels_join_and_name(tmp_path):
    root = tmp_path / "clips"
    t = np.arange(16000) / 16000
    for i in range(10):
        stereo = np.stack([0.3 * np.sin(2 * np.pi * (200 + 10 * i) * t)] * 2, axis=1)
        _write(root / f"s{i}.wav", stereo, rate=16000)            # 1 s, 16 kHz stereo
    ds = sp.load_wav_folder(root, seq_len=2000)                     # default: resample to 8 kHz
    assert ds.meta["rate"] == 8000 and ds.meta["join"] is False
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [32, 4, 4]   # 8/1/1 files x 4 windows
    assert ds.splits["train"][0][0].shape == (198, 20)
    native = sp.load_wav_folder(root, seq_len=2000, rate="native")
    assert native.meta["rate"] == 16000 and len(native.splits["train"]) == 64
    joined = sp.load_wav_folder(root, seq_len=6000, join=True)      # one stream per folder and split
    assert joined.meta["join"] is True and [len(joined.splits[s]) for s in ("train", "valid", "test")] == [10, 1, 1]
    assert len(joined.provenance["train"][1]["recordings"]) == 2   # 8 s at 8 kHz -> 10 x 0.75 s: 2nd spans 2 files
    with pytest.raises(DataError, match="valid split has no sequence of 12000 samples"):
        sp.load_wav_folder(root, seq_len=12000)                     # auto-joins, but valid holds only 1 s
    # through the registry: wav:<folder>?options, accepted by TrainConfig too
    name = canonical_name(f"wav:{root}?seq_len=2000&rate=native")
    assert name == f"wav:{root}?rate=native&seq_len=2000"
    assert load_dataset(name).meta["rate"] == 16000
    from gatedrnn.train import TrainConfig
    assert TrainConfig(dataset=f"wav:{root}").dataset == f"wav:{root}"


@pytest.mark.parametrize("content", [b"this is not audio at all\n" * 40, b"", b"RIFF\x24\x00\x00\x00WAVEfmt "])
def test_bad_file_in_user_folder_is_named(tmp_path, content):
    root = tmp_path / "clips"
    for i in range(3):
        _write(root / f"ok{i}.wav", np.zeros(800) + 0.1)
    (root / "sub").mkdir()
    (root / "sub" / "broken.wav").write_bytes(content)
    with pytest.raises(DataError, match=r"sub/broken\.wav"):
        sp.load_wav_folder(root)
    with pytest.raises(DataError, match="broken"):
        load_dataset(f"wav:{root}")


def test_user_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        sp.load_wav_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .wav"):
        sp.load_wav_folder(tmp_path / "empty")
    for i, rate in enumerate((8000, 16000, 8000)):
        _write(tmp_path / "mixed" / f"{i}.wav", np.zeros(900), rate=rate)
    with pytest.raises(DataError, match="different sample rates"):
        sp.load_wav_folder(tmp_path / "mixed", rate="native")
    with pytest.raises(DataError, match="seq_len must be a positive integer"):
        canonical_name(f"wav:{tmp_path}?seq_len=abc")


# ------------------------------------------------------------------------------ FSDD files
def test_fsdd_folder_checks(tmp_path):
    names = ["0_george_0.wav", "1_theo_12.wav", "9_lucas_7.wav"]
    folder = tmp_path / "speech" / "fsdd"
    folder.mkdir(parents=True)
    for n in names:
        shutil.copy(FSDD / n, folder / n)
    with pytest.raises(DataError, match="incomplete"):
        sp.find_fsdd(tmp_path, download=False)
    (folder / names[1]).write_bytes((FSDD / names[1]).read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(ChecksumError, match="1_theo_12.wav"):
        sp.find_fsdd(tmp_path, download=False)
    assert [sp.fsdd_split(n) for n in names] == ["test", "train", "valid"]


def test_downloader_extracts_only_verified_recordings(tmp_path):
    names = ["0_george_0.wav", "5_jackson_33.wav"]
    manifest = sp.read_manifest()
    sub = {n: manifest[n] for n in names}

    def archive(path, tamper=False):
        with tarfile.open(path, "w:gz") as tf:
            def add(name, data, **kw):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                for k, v in kw.items():
                    setattr(info, k, v)
                tf.addfile(info, io.BytesIO(data))
            root = "free-spoken-digit-dataset-1.0.10/"
            add(root + "README.md", b"readme")
            for n in names:
                data = (FSDD / n).read_bytes()
                add(root + "recordings/" + n, data[:-1] + b"\x7f" if tamper and n == names[1] else data)
            add("../recordings/" + names[0], b"evil")                     # traversal: ignored
            add(root + "recordings/../../0_george_0.wav", b"evil")          # not in recordings/: ignored
            link = tarfile.TarInfo(root + "recordings/9_theo_1.wav")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"      # link: ignored
            tf.addfile(link)
        return path

    good = archive(tmp_path / "good.tar.gz")
    dest = tmp_path / "cache" / "fsdd"
    out = sp.download_fsdd(dest, urls=[good.as_uri()], manifest=sub)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for n in names:
        assert (out / n).read_bytes() == (FSDD / n).read_bytes()
    assert not (tmp_path / "cache" / "0_george_0.wav").exists() and not (tmp_path / "recordings").exists()

    bad = archive(tmp_path / "bad.tar.gz", tamper=True)
    dest2 = tmp_path / "cache2"
    with pytest.raises(ChecksumError, match="5_jackson_33.wav"):
        sp.download_fsdd(dest2, urls=[bad.as_uri()], manifest=sub)
    assert not (dest2 / names[1]).exists()
    with pytest.raises(DataError, match="could not download"):
        sp.download_fsdd(tmp_path / "c3", urls=[(tmp_path / "missing.tar.gz").as_uri()], manifest=sub)


# ------------------------------------------------------------------------------ training + sampling
@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    from gatedrnn.train import TrainConfig, train
    out = tmp_path_factory.mktemp("run") / "fsdd-a-gru"
    cfg = TrainConfig(dataset="fsdd-a", unit="gru", data_dir=str(data_dir()), limit_sequences=48, epochs=3,
                      batch_size=8, seed=0)
    res = train(cfg, out, log=lambda m: None)
    return out, res


def test_short_training_valid_nll_falls(speech_run):
    out, res = speech_run
    hist = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [h["valid_nll"] for h in hist]
    assert len(valid) == 4 and all(math.isfinite(v) for v in valid)
    assert valid[-1] < valid[0] - 1.0 and min(valid[1:]) < valid[0]
    spec = json.loads((out / "model.json").read_text())
    assert (spec["kind"], spec["head"], spec["input_size"], spec["output_size"], spec["hidden_size"]) == \
        ("speech", "mdn", 20, 10, 227)                       # Table 1: GRU 227 units for speech
    assert res["status"] == "completed" and res["recurrent_parameters"] == 168_888
    for s in ("train", "valid", "test"):
        assert res[f"{s}_nll_per_sample"] == pytest.approx(res[f"{s}_nll"] / 10)


def test_sample_cli_writes_wav(speech_run, tmp_path, capsys):
    from gatedrnn.cli import main
    out, _ = speech_run
    wav = tmp_path / "s.wav"
    assert main(["sample", str(out), "--out", str(wav), "--seconds", "0.25", "--seed", "3"]) == 0
    info = sf.info(str(wav))
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (8000, 2000, 1, "PCM_16")
    audio, _ = sf.read(str(wav), dtype="int16")
    assert audio.std() > 0
    assert main(["sample", str(out), "--out", str(wav), "--seconds", "0.25", "--seed", "3"]) == 0
    assert np.array_equal(sf.read(str(wav), dtype="int16")[0], audio)          # seeded: reproducible
    primed = tmp_path / "p.wav"
    assert main(["sample", str(out), "--out", str(primed), "--seconds", "0.1", "--prime", "205",
                 "--data-dir", str(data_dir())]) == 0
    p, rate = sf.read(str(primed), dtype="int16")
    assert rate == 8000 and len(p) == 800
    x, y = load_dataset("fsdd-a", data_dir()).splits["test"][0]
    from gatedrnn.generate import sequence_audio
    norm = json.loads((out / "model.json").read_text())["meta"]["norm"]
    ref = np.round(sequence_audio(x, y, norm)[:205] * 32768)
    assert np.abs(p[:205] - ref).max() <= 1                                     # the prime is kept
    assert main(["sample", str(out), "--out", str(tmp_path / "x.mid")]) == 2    # wrong suffix: clear error
    assert "wav" in capsys.readouterr().err


def test_data_cli_stats_and_verify(capsys):
    from gatedrnn.cli import main
    assert main(["data", "stats", "fsdd-a", "fsdd-b", "--data-dir", str(data_dir()), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    got = {(r["dataset"], r["split"]): (r["sequences"], r["steps"], r["samples"]) for r in rows}
    assert got[("fsdd-a", "train")] == (5784, 5784 * 48, 5784 * 500)
    assert got[("fsdd-b", "all")] == (800, 800 * 798, 800 * 8000)
    assert main(["data", "verify", "--dataset", "fsdd-a", "--data-dir", str(data_dir())]) == 0
    out = capsys.readouterr().out
    assert "fsdd/*.wav (3000)" in out and out.splitlines()[1].startswith("ok")


def test_tampered_manifest_is_refused_at_run_time(tmp_path):
    """An installed package whose fsdd_wav.sha256 was edited (here: one recording swapped for another,
    and the manifest line edited to match, so that the folder check alone would pass) is refused when
    a run loads FSDD: `gatedrnn train` and `gatedrnn data verify` exit 2 naming the damaged manifest,
    and no run starts. Runs a copy of the package (never the repo's src/, never the shared data)."""
    import os
    import subprocess
    import sys

    import gatedrnn
    src = Path(gatedrnn.__file__).resolve().parent
    copy = tmp_path / "site" / "gatedrnn"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    victim, impostor = "3_theo_21.wav", "4_theo_21.wav"
    data = tmp_path / "data"
    (data / "speech" / "fsdd").mkdir(parents=True)
    (data / "music").mkdir()
    for name in sp.read_manifest():
        if name != victim:
            os.symlink(FSDD / name, data / "speech" / "fsdd" / name)
    shutil.copyfile(FSDD / impostor, data / "speech" / "fsdd" / victim)
    # control: with the packaged manifest, the swapped recording is caught by the folder check
    packaged = sp.read_manifest()
    row, = sp.verify_fsdd(data / "speech" / "fsdd", {victim: packaged[victim]})
    assert row["status"] == "mismatch"
    lines = (copy / "data" / "fsdd_wav.sha256").read_text().splitlines()
    new_sha = hashlib.sha256((FSDD / impostor).read_bytes()).hexdigest()
    i = next(k for k, line in enumerate(lines) if line.endswith("  " + victim))
    lines[i] = f"{new_sha}  {victim}"
    (copy / "data" / "fsdd_wav.sha256").write_text("\n".join(lines) + "\n")
    assert sp.read_manifest(copy / "data" / "fsdd_wav.sha256")[victim] == new_sha   # folder and manifest agree
    script = (
        "import sys, gatedrnn\n"
        f"assert gatedrnn.__file__.startswith({str(copy)!r}), gatedrnn.__file__\n"
        "from gatedrnn.cli import main\n"
        f"a = main(['train', '--dataset', 'fsdd-a', '--epochs', '0', '--data-dir', {str(data)!r}, "
        f"'--out', {str(tmp_path / 'run')!r}, '--no-progress', '--limit-sequences', '2'])\n"
        f"b = main(['data', 'verify', '--dataset', 'fsdd-a', '--data-dir', {str(data)!r}])\n"
        "print('codes', a, b)\n")
    env = {k: v for k, v in os.environ.items() if k != "GATEDRNN_DATA_DIR"}
    env.update(PYTHONPATH=str(copy.parent), GATEDRNN_OFFLINE="1", GATEDRNN_NO_KERNELS="1")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "codes 2 2" in r.stdout, (r.stdout, r.stderr[-3000:])
    errs = [line for line in r.stderr.splitlines() if ": error:" in line]
    assert len(errs) == 2 and all("manifest" in e and "damaged" in e for e in errs), r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "result.json").exists() and not (tmp_path / "run" / "model.json").exists()
