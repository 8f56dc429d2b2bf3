"""Small shared helpers: atomic file writes, environment/version records, device choice."""
from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile
from pathlib import Path

import torch


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file + rename, so a kill mid-write never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class UnsafeFileError(ValueError):
    """A .pt file that is not plain weights/tensors (it would need arbitrary code to load)."""


def load_weights(path, device="cpu"):
    """Load a .pt file written by gatedrnn (state dicts, checkpoints) WITHOUT executing anything:
    torch's weights-only unpickler accepts tensors, dicts, lists, tuples, strings and numbers and
    refuses every other global. A results folder is shared data (a cluster's disk, a downloaded
    study), so a crafted checkpoint must never run code. Raises UnsafeFileError naming the file."""
    import pickle
    path = Path(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as e:
        # torch's message suggests weights_only=False — exactly what must not happen; keep the reason only
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln or "GLOBAL" in ln]
        why = lines[0] if lines else f"corrupt, truncated or not a torch file: {type(e).__name__}"
        raise UnsafeFileError(f"{path}: refused to load: not a plain gatedrnn weights/checkpoint file "
                              f"({why[:160]}); nothing in it was executed") from None


def environment() -> dict:
    """Machine and versions, recorded with every run and benchmark."""
    import numpy

    from . import __version__
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "gatedrnn": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "hostname": socket.gethostname(),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev
