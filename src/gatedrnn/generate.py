"""Generation: draw a sequence from a trained model one step at a time, feeding each draw back.

Music: frame t+1 ~ Π_k Bernoulli(σ(a_k / temperature)), written as a standard MIDI file.
Speech: 10 samples per step from the mixture of Gaussians, fed back as the last 10 of the next 20-sample
input window, written as a 16-bit PCM WAV file. The seed window is digital silence (20 samples of 0.0,
normalised like the training data), or, with a prime, the first N samples of the first test sequence
(kept at the start of the output). Values are drawn in the normalised space, clipped there to the range
of [-1, 1] audio before they are fed back, de-normalised with the training constants (x = z·std + mean)
and written as round(x·32768) clipped to the int16 range, i.e. the exact inverse of the int16/32768 reading.

    generate_from_run(run_dir, out, seed=0, temperature=1.0, steps=128 | seconds=2.0, prime=N)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .train import load_run, prepare_data

__all__ = ["generate_from_run", "sample_music", "roll_to_midi", "sample_speech", "write_wav", "sequence_audio",
           "FRAME_SECONDS", "DEFAULT_FRAME_SECONDS"]

# Seconds per frame at 120 bpm: JSB frames are quarter notes, the other sets eighth notes
# (Boulanger-Lewandowski et al. 2012).
FRAME_SECONDS = {"jsb": 0.5}
DEFAULT_FRAME_SECONDS = 0.25


def _check(n: int, what: str, temperature: float) -> None:
    if n <= 0:
        raise ValueError(f"{what} must be positive, got {n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


# ------------------------------------------------------------------------------------ music
@torch.no_grad()
def sample_music(model, steps: int, *, seed: int = 0, temperature: float = 1.0,
                 prime: np.ndarray | None = None) -> np.ndarray:
    """A (steps, W) binary piano roll. `prime` (T0, W): frames to condition on (kept in the output)."""
    _check(steps, "steps", temperature)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    W = model.rnn.input_size
    x = torch.zeros(1, 1, W)                      # the zero "start" frame the model was trained with
    state, frames = None, []
    if prime is not None and len(prime):
        p = torch.as_tensor(np.asarray(prime), dtype=torch.float32).unsqueeze(0)
        inp = torch.cat([x, p[:, :-1]], dim=1)
        _, state = model.rnn(inp, state)
        frames = [row for row in p[0]]
        x = p[:, -1:]
    while len(frames) < steps:
        h, state = model.rnn(x, state)
        y = model.head.sample(model.head(h[:, -1]), generator=gen, temperature=temperature)
        frames.append(y[0])
        x = y.view(1, 1, W)
    return torch.stack(frames[:steps]).numpy().astype(np.uint8)


def roll_to_midi(roll: np.ndarray, path: str | Path, *, lowest_pitch: int = 21,
                 frame_seconds: float = DEFAULT_FRAME_SECONDS, program: int = 0, velocity: int = 80) -> int:
    """Write a binary piano roll (T, W) as a one-track MIDI file (column c = MIDI pitch c + lowest_pitch).
    A note held over consecutive frames is one note. Returns the number of notes written."""
    import pretty_midi

    roll = np.asarray(roll)
    pm = pretty_midi.PrettyMIDI(initial_tempo=60.0 / (2 * frame_seconds) if frame_seconds else 120.0)
    inst = pretty_midi.Instrument(program=program, name="gatedrnn")
    padded = np.vstack([np.zeros((1, roll.shape[1]), roll.dtype), roll, np.zeros((1, roll.shape[1]), roll.dtype)])
    diff = np.diff(padded.astype(np.int8), axis=0)          # +1 onset, -1 offset
    for col in range(roll.shape[1]):
        on, off = np.flatnonzero(diff[:, col] == 1), np.flatnonzero(diff[:, col] == -1)
        for a, b in zip(on, off):
            pitch = col + lowest_pitch
            if 0 <= pitch <= 127:
                inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=int(pitch),
                                                   start=a * frame_seconds, end=b * frame_seconds))
    pm.instruments.append(inst)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return len(inst.notes)


# ----------------------------------------------------------------------------------- speech
def _norm_of(meta: dict) -> dict:
    norm = (meta or {}).get("norm")
    if not norm or "mean" not in norm or "std" not in norm:
        raise ValueError("the model's dataset meta has no normalisation constants (meta['norm']); "
                         "is this a speech run?")
    return norm


@torch.no_grad()
def sample_speech(model, n_samples: int, *, seed: int = 0, temperature: float = 1.0, meta: dict,
                  prime: np.ndarray | None = None) -> np.ndarray:
    """``n_samples`` of audio (float32 in [-1, 1)), prime included. ``prime``: audio (float, [-1, 1])
    to condition on, kept at the start of the output; default: a window of silence (not in the output)."""
    _check(n_samples, "n_samples", temperature)
    norm = _norm_of(meta)
    fr = (meta or {}).get("frame", {})
    n_in, n_out, stride = int(fr.get("input", 20)), int(fr.get("output", 10)), int(fr.get("stride", 10))
    if stride != n_out or n_in < n_out:
        raise ValueError(f"generation needs stride == output size <= input size, got {n_in}/{n_out}/{stride}")
    mean, std = float(norm["mean"]), float(norm["std"])

    model.eval()
    fused = getattr(model.rnn, "fused", None)
    if hasattr(model.rnn, "fused"):   # one step at a time: the reference loop is ~50x faster than a kernel call
        model.rnn.fused = False
    try:
        return _sample(model, n_samples, int(seed), float(temperature), mean, std, n_in, n_out, stride, prime)
    finally:
        if hasattr(model.rnn, "fused"):
            model.rnn.fused = fused


def _sample(model, n_samples, seed, temperature, mean, std, n_in, n_out, stride, prime):
    lo, hi = (-1.0 - mean) / std, ((32767 / 32768) - mean) / std
    gen = torch.Generator().manual_seed(seed)
    prime = np.zeros(0) if prime is None else np.asarray(prime, np.float64).reshape(-1)[:n_samples]
    kept = len(prime)
    # Left-pad with silence to a whole number of windows: the last input window ends at the prime's end.
    pad = n_in - kept if kept < n_in else (-(kept - n_in)) % stride
    z = np.clip((np.concatenate([np.zeros(pad), prime]) - mean) / std, lo, hi).astype(np.float32)
    buf = torch.from_numpy(z)
    state = None
    T0 = (len(z) - n_in) // stride                       # conditioning steps before the first draw
    if T0 > 0:
        xs = buf.unfold(0, n_in, stride)[:T0].unsqueeze(0)  # (1, T0, n_in)
        _, state = model.rnn(xs, state)
    out = [buf]
    window = buf[-n_in:].clone()
    n_new = n_samples - kept
    drawn = 0
    while drawn < n_new:
        h, state = model.rnn(window.view(1, 1, n_in), state)
        y = model.head.sample(model.head(h[:, -1]), generator=gen, temperature=temperature)[0]
        y = y.to(torch.float32).clamp(lo, hi)
        out.append(y)
        window = torch.cat([window[n_out:], y])
        drawn += n_out
    z_all = torch.cat(out).numpy().astype(np.float64)[pad:pad + n_samples]
    x = z_all * std + mean
    return np.clip(x, -1.0, 32767 / 32768).astype(np.float32)


def write_wav(path, audio: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV: round(x·32768) clipped to [-32768, 32767]."""
    import soundfile as sf
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, int(rate), subtype="PCM_16", format="WAV")
    return path


def sequence_audio(x: np.ndarray, y: np.ndarray, norm: dict) -> np.ndarray:
    """The audio of one framed sequence (inputs (T, 20), targets (T, 10)): x_0 followed by every
    target window, de-normalised."""
    s = np.concatenate([np.asarray(x[0]).reshape(-1), np.asarray(y).reshape(-1)])
    return s.astype(np.float64) * float(norm["std"]) + float(norm["mean"])


# ---------------------------------------------------------------------------------- a run
def generate_from_run(run_dir, out=None, *, seed: int = 0, temperature: float = 1.0, steps: int = 128,
                      seconds: float = 2.0, prime: int = 0, data_dir: str | None = None) -> str:
    """Draw from a trained run's best model and write the draw: `steps` frames as MIDI (music) or
    `seconds` of audio as WAV (speech), into `out` (default RUN_DIR/samples/seed<SEED>.mid or .wav).
    prime=N: condition on the first N frames (music) or samples (speech) of the first test sequence,
    read from `data_dir` (default: where the run read its data). Returns a one-line summary."""
    run_dir = Path(run_dir)
    cfg, spec, model = load_run(run_dir)
    music = spec.kind == "music"
    out = Path(out) if out is not None else run_dir / "samples" / f"seed{seed}{'.mid' if music else '.wav'}"
    if music and out.suffix.lower() not in (".mid", ".midi"):
        raise ValueError(f"--out must end in .mid or .midi for a music model, got {out}")
    if not music and out.suffix.lower() != ".wav":
        raise ValueError(f"--out must end in .wav for a speech model, got {out}")
    if not seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {seconds}")
    out.parent.mkdir(parents=True, exist_ok=True)
    test = None
    if prime:
        if data_dir:
            cfg = cfg.model_copy(update={"data_dir": data_dir})
        test = prepare_data(cfg).splits["test"][0]
    meta = spec.meta or {}
    if music:
        roll = sample_music(model, steps, seed=seed, temperature=temperature,
                            prime=None if test is None else test[1][:prime])
        n = roll_to_midi(roll, out, lowest_pitch=int(meta.get("lowest_pitch", 21)),
                         frame_seconds=meta.get("frame_seconds")  # midi:FOLDER sets record their frame length
                         or FRAME_SECONDS.get(spec.dataset, DEFAULT_FRAME_SECONDS))
        return (f"wrote {out}: {len(roll)} frames, {n} notes, mean {roll.sum(1).mean():.2f} notes/frame "
                f"(seed {seed}, temperature {temperature})")
    rate = int(meta.get("rate", 8000))
    audio_prime = None if test is None else sequence_audio(*test, _norm_of(meta))[:prime]
    audio = sample_speech(model, max(1, int(round(seconds * rate))), seed=seed, temperature=temperature,
                          meta=meta, prime=audio_prime)
    write_wav(out, audio, rate)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    clipped = float(np.mean(np.abs(audio) >= 0.999))
    return (f"wrote {out}: {len(audio) / rate:.3f} s at {rate} Hz, 16-bit PCM ({len(audio)} samples), "
            f"rms {rms:.4f}, {clipped:.1%} at full scale (seed {seed}, temperature {temperature}"
            f"{f', primed with {len(audio_prime)} test samples' if audio_prime is not None else ''})")
