"""Generation for raw speech: draw audio from a trained model, 10 samples per step, feeding each draw
back as the last 10 of the next 20-sample input window, and write it as a 16-bit PCM WAV file.

    gatedrnn sample RUN_DIR --out sample.wav --seconds 2 [--seed N] [--temperature T] [--prime N]

The seed window is digital silence (20 samples of 0.0, normalised like the training data), or, with
``--prime N``, the first N samples of the first test sequence (kept at the start of the output).
Values are drawn in the normalised space, clipped there to the range of [-1, 1] audio before they
are fed back, de-normalised with the training constants (x = z·std + mean) and written as
round(x·32768) clipped to the int16 range, i.e. the exact inverse of the int16/32768 reading.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["sample_speech", "sample_speech_cli", "write_wav", "sequence_audio"]


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
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
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


def sample_speech_cli(args, cfg, spec, model) -> int:
    """`gatedrnn sample` for speech runs: args.out (.wav), args.seconds (default 2), args.seed,
    args.temperature, args.prime (samples of the first test sequence, 0 = silence), args.data_dir."""
    out = Path(args.out)
    if out.suffix.lower() != ".wav":
        raise ValueError(f"--out must end in .wav for a speech model, got {out}")
    meta = spec.get("meta") or {}
    rate = int(meta.get("rate", 8000))
    seconds = 2.0 if getattr(args, "seconds", None) is None else float(args.seconds)
    if not seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {seconds}")
    n = max(1, int(round(seconds * rate)))
    prime = None
    n_prime = int(getattr(args, "prime", 0) or 0)
    if n_prime:
        from .train import prepare_data
        if getattr(args, "data_dir", None):
            cfg = cfg.model_copy(update={"data_dir": args.data_dir})
        x, y = prepare_data(cfg).splits["test"][0]
        prime = sequence_audio(x, y, _norm_of(meta))[:n_prime]
    audio = sample_speech(model, n, seed=args.seed, temperature=args.temperature, meta=meta, prime=prime)
    write_wav(out, audio, rate)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    clipped = float(np.mean(np.abs(audio) >= 0.999))
    print(f"wrote {out}: {len(audio) / rate:.3f} s at {rate} Hz, 16-bit PCM ({len(audio)} samples), "
          f"rms {rms:.4f}, {clipped:.1%} at full scale "
          f"(seed {args.seed}, temperature {args.temperature}"
          f"{f', primed with {len(prime)} test samples' if prime is not None else ''})")
    return 0
