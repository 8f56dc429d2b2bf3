"""generate.py: drawing music and speech from a model — determinism by seed, priming, what a model that
knows only one thing draws, and the MIDI and WAV writers read back by independent libraries."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gatedrnn.generate import roll_to_midi, sample_music, sample_speech, sequence_audio, write_wav
from gatedrnn.model import SequenceModel


def _certain_music_model(pitch: int, W: int = 12) -> SequenceModel:
    """A model that ignores its input and turns exactly `pitch` on: head weights 0, bias ±20."""
    m = SequenceModel("gru", W, 5, W)
    with torch.no_grad():
        m.head.linear.weight.zero_()
        m.head.linear.bias.fill_(-20.0)
        m.head.linear.bias[pitch] = 20.0
    return m


def test_sample_music_draws_what_the_model_is_sure_of_and_keeps_the_prime():
    m = _certain_music_model(3)
    roll = sample_music(m, 6, seed=0)
    expected = np.zeros((6, 12), np.uint8)
    expected[:, 3] = 1
    assert roll.dtype == np.uint8 and (roll == expected).all()
    prime = np.zeros((2, 12), np.uint8)
    prime[:, 7] = 1
    roll = sample_music(m, 5, seed=0, prime=prime)
    assert (roll[:2] == prime).all() and (roll[2:, 3] == 1).all() and roll[2:].sum() == 3


def test_sample_music_is_a_function_of_the_seed():
    torch.manual_seed(0)
    m = SequenceModel("lstm", 12, 6, 12)            # untrained: p ≈ 1/2 per note, so draws differ by seed
    a, b, c = sample_music(m, 16, seed=1), sample_music(m, 16, seed=1), sample_music(m, 16, seed=2)
    assert (a == b).all() and not (a == c).all()
    with pytest.raises(ValueError, match="steps must be positive"):
        sample_music(m, 0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_music(m, 4, temperature=0.0)


def test_sample_speech_length_prime_and_a_certain_model():
    """One component, mean 0 and the smallest scale: every drawn sample is the data mean (to 1e-3 · std)."""
    m = SequenceModel("gru", 20, 6, 10, head="mdn", head_kwargs={"n_components": 1})
    with torch.no_grad():
        m.head.linear.weight.zero_()
        m.head.linear.bias.zero_()
        m.head.linear.bias[11:].fill_(-30.0)        # scale = min_scale + softplus(-30) ≈ 1e-3
    meta = {"norm": {"mean": 0.05, "std": 0.2}, "frame": {"input": 20, "output": 10, "stride": 10}}
    x = sample_speech(m, 95, seed=0, meta=meta)
    assert x.shape == (95,) and x.dtype == np.float32
    assert np.allclose(x, 0.05, atol=1e-3)
    prime = np.linspace(-0.5, 0.5, 30)
    y = sample_speech(m, 95, seed=0, meta=meta, prime=prime)
    assert np.allclose(y[:30], prime, atol=1e-6) and np.allclose(y[30:], 0.05, atol=1e-3)
    with pytest.raises(ValueError, match="normalisation"):
        sample_speech(m, 10, meta={})


def test_wav_round_trip_and_sequence_audio(tmp_path):
    import soundfile as sf
    audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 0.25], np.float64)
    write_wav(tmp_path / "a.wav", audio, 8000)
    pcm, rate = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    assert rate == 8000 and pcm.tolist() == [0, 16384, -16384, 32767, -32768, 8192]   # round(x·32768), clipped
    # a framed sequence: x_0 (20 samples) then every 10-sample target, de-normalised
    norm = {"mean": 0.1, "std": 2.0}
    z = np.arange(40, dtype=np.float64)
    x, y = np.stack([z[0:20], z[10:30]]), np.stack([z[20:30], z[30:40]])
    assert np.allclose(sequence_audio(x, y, norm), z * 2.0 + 0.1)


def test_roll_to_midi_round_trip(tmp_path):
    import pretty_midi

    roll = np.zeros((6, 88), np.uint8)
    roll[0:3, 39] = 1          # middle C (60) held three frames = one note
    roll[4, 39] = 1            # struck again
    roll[2:6, 43] = 1
    n = roll_to_midi(roll, tmp_path / "x.mid", frame_seconds=0.5)
    notes = sorted((x.pitch, round(x.start, 3), round(x.end, 3))
                   for x in pretty_midi.PrettyMIDI(str(tmp_path / "x.mid")).instruments[0].notes)
    assert n == 3
    assert notes == [(60, 0.0, 1.5), (60, 2.0, 2.5), (64, 1.0, 3.0)]
