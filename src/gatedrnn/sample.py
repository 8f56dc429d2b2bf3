"""Generation: draw a sequence from a trained model, one step at a time, feeding each draw back.

Music: frame t+1 ~ Π_k Bernoulli(σ(a_k / temperature)), written as a standard MIDI file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# Seconds per frame at 120 bpm: JSB frames are quarter notes, the other sets eighth notes
# (Boulanger-Lewandowski et al. 2012).
FRAME_SECONDS = {"jsb": 0.5}
DEFAULT_FRAME_SECONDS = 0.25


@torch.no_grad()
def sample_music(model, steps: int, *, seed: int = 0, temperature: float = 1.0,
                 prime: np.ndarray | None = None) -> np.ndarray:
    """A (steps, W) binary piano roll. `prime` (T0, W): frames to condition on (kept in the output)."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
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
