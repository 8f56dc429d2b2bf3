"""Small shared helpers: atomic file writes, environment/version records, device choice, config field roles.

Importing it imports no torch (the config and a study's grid use the roles and the file writes): the helpers
that read or write tensors import it when called."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc/self/status), else by
    the classic set-and-restore."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode open() gives a new file: 0666 minus the umask (mkstemp's temp files are 0600, which would
    make a study on a shared disk unreadable to the others)."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file + rename, so a kill mid-write never leaves a half file. The file gets the
    mode a plain open() would give it (the umask's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), new_file_mode())
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
    try:
        os.fchmod(fd, new_file_mode())    # the umask's mode, as for every run file (atomic_write_bytes)
        os.close(fd)
        import torch
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class WeightsFileError(ValueError):
    """A .pt file (best.pt, checkpoint.pt) that cannot be used: truncated, corrupt, or not the model's
    weights. The message is one line naming the file."""


class UnsafeFileError(WeightsFileError):
    """A .pt file that is not plain weights/tensors (it would need arbitrary code to load)."""


def load_weights(path, device="cpu"):
    """Load a .pt file written by gatedrnn (state dicts, checkpoints) WITHOUT executing anything:
    torch's weights-only unpickler accepts tensors, dicts, lists, tuples, strings and numbers and
    refuses every other global. A results folder is shared data (a cluster's disk, a downloaded
    study), so a crafted checkpoint must never run code. Raises UnsafeFileError naming the file for
    such a file, WeightsFileError naming it for a truncated or corrupt one."""
    import pickle

    import torch
    path = Path(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError, OSError) as e:
        # torch's message suggests weights_only=False — exactly what must not happen; keep the reason only
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln or "GLOBAL" in ln]
        if lines:
            raise UnsafeFileError(f"{path}: refused to load: not a plain gatedrnn weights/checkpoint file "
                                  f"({lines[0][:160]}); nothing in it was executed") from None
        # a truncated zip archive fails in torch's reader (RuntimeError) or in the OS ([Errno 22])
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: BaseException) -> WeightsFileError:
    if isinstance(e, OSError) and not path.is_file():
        return WeightsFileError(f"{path}: cannot be read ({e.strerror or type(e).__name__})")
    # an OSError here is the archive reader seeking past a cut end ("[Errno 22] Invalid argument"): no news
    reason = "" if isinstance(e, OSError) else " ".join(str(e).split())
    reason = f" ({type(e).__name__}: {reason[:120]})" if reason else ""
    return WeightsFileError(f"{path}: cannot be read: truncated, corrupt or not a torch file{reason}; "
                            f"nothing in it was executed")


def load_state(module: torch.nn.Module, state, path) -> None:
    """module.load_state_dict(state) for a state read from `path`; a state that does not fit the
    module (another size or unit, missing or extra entries, not a dict of tensors) raises
    WeightsFileError naming the file and the first differences, in one line."""
    import torch
    path = Path(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{path}: does not hold the model's weights (expected a dict of tensors, got "
                               f"{type(state).__name__})")
    want = module.state_dict()
    diffs = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
             for k, v in want.items() if k in state and state[k].shape != v.shape]
    missing, extra = [k for k in want if k not in state], [k for k in state if k not in want]
    if missing:
        diffs.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3})" if len(missing) > 3 else ""))
    if extra:
        diffs.append(f"unexpected {', '.join(extra[:3])}" + (f" (+{len(extra) - 3})" if len(extra) > 3 else ""))
    if diffs:
        raise WeightsFileError(f"{path}: the weights do not fit the model (another size or unit?): "
                               + "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""))
    try:
        module.load_state_dict(state)
    except RuntimeError as e:   # anything the checks above missed: still one line naming the file
        raise WeightsFileError(f"{path}: the weights do not fit the model: {' '.join(str(e).split())[:300]}") \
            from None


# The widest vector instruction set first: the fused kernels are compiled for the machine (-march=native), so
# two machines of one "model name" (AVX-512 or not) can train the same seed to different floats.
_ISAS = ("avx512f", "avx2", "avx", "sse4_2", "sve", "asimd", "neon")


def _cpuinfo() -> tuple[str, str]:
    """(model name, the widest vector ISA of `_ISAS` the CPU flags list) from /proc/cpuinfo, or ("", "")."""
    name, isa = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not isa:
                    flags = set(line.split(":", 1)[1].split())
                    isa = next((i for i in _ISAS if i in flags), "")
    except OSError:
        pass
    return name, isa


@functools.lru_cache(maxsize=None)
def source_digest(root: str | None = None) -> str:
    """sha256 (16 hex digits) of the package's own source files (.py, .cpp, .h under `root`, default this
    package): the code a run was trained by, with or without git — `__version__` does not change per commit."""
    base = Path(root) if root else Path(__file__).parent
    h = hashlib.sha256()
    for p in sorted(q for q in base.rglob("*") if q.suffix in (".py", ".cpp", ".h") and q.is_file()):
        h.update(p.relative_to(base).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def environment() -> dict:
    """Machine and versions, recorded with every run and benchmark (`source`: `source_digest()`)."""
    import numpy
    import torch

    from . import __version__
    name, isa = _cpuinfo()
    return {
        "gatedrnn": __version__, "source": source_digest(), "python": sys.version.split()[0],
        "torch": torch.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
        "hostname": socket.gethostname(), "cpu": name or platform.processor() or "", "cpu_isa": isa,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def resolve_device(name: str = "auto") -> torch.device:
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev


# ------------------------------------------------------------------------ config field roles
# A config field says once what it is (`Field(..., **role("data"))`); every set of fields that one rule
# applies to (left out of the run id, shared by the models trained together, a study's to set, a flag of
# a command) is derived from the tags, never written out beside the config.
def role(*names: str, flag: str | None = None) -> dict:
    """Keyword arguments of pydantic's Field: the field's roles (names its config module explains), and,
    for fields given together on the command line, the one flag they share (e.g. lr_low and lr_high:
    --lr-range LOW HIGH)."""
    extra: dict = {"roles": list(names)}
    if flag is not None:
        extra["flag"] = flag
    return {"json_schema_extra": extra}


def roles_of(field) -> tuple[str, ...]:
    return tuple((field.json_schema_extra or {}).get("roles", ()))


def fields_with(model, *names: str) -> tuple[str, ...]:
    """The fields of a pydantic model that carry any of these roles, in the model's order."""
    return tuple(k for k, f in model.model_fields.items() if set(roles_of(f)) & set(names))
