"""Build (once per machine) and load the fused C++ loops.

The kernel is one translation unit of plain C++ (fused.cpp) with a C ABI — no torch headers, so it
compiles in about a second — built with the system C++ compiler into a shared library that ctypes
loads. The library is cached under `$GATEDRNN_CACHE_DIR` (default `$XDG_CACHE_HOME/gatedrnn`, i.e.
~/.cache/gatedrnn) in `kernels/fused-<key>.so`, where the key hashes the source, the compiler
command, the compiler version and the CPU's feature flags (it is built with -march=native, so a
cache shared between different machines can never hand one a binary it cannot run).
Concurrent builds are safe: each process compiles to a private temporary file and renames it into
place atomically.

`load()` returns the ctypes library or raises `KernelBuildError`; `gatedrnn.kernels.available` turns
that into one warning and the reference loop.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SOURCE = Path(__file__).with_name("fused.cpp")
ABI_VERSION = 9
# -fno-trapping-math lets GCC if-convert the float selects of the activations (clamps, the two tanh
# branches), i.e. vectorise the elementwise loops (GCC 12 leaves them scalar without it); it changes no
# result, only what the compiler may assume about floating-point exceptions, which nothing here reads.
_BASE = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-std=c++17",
         "-pthread"]
# tried in order: OpenMP (shares torch's libgomp thread pool) + native ISA; native ISA with std::thread;
# portable.
FLAG_SETS = [_BASE + ["-march=native", "-fopenmp"], _BASE + ["-march=native"], _BASE]
FLAGS = FLAG_SETS[0]

_lock = threading.Lock()
_lib = None
build_seconds: float | None = None   # wall time of the last compile in this process (None: loaded from cache)
library_path: Path | None = None


class KernelBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    env = os.environ.get("GATEDRNN_CACHE_DIR")
    if env:
        return Path(env) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gatedrnn" / "kernels"


def compiler() -> str:
    cxx = os.environ.get("CXX")
    if cxx and shutil.which(cxx):
        return shutil.which(cxx)
    for name in ("c++", "g++", "clang++"):
        p = shutil.which(name)
        if p:
            return p
    raise KernelBuildError("no C++ compiler found (set CXX, or install g++)")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() + platform.machine()


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"cannot run the C++ compiler {cxx}: {e}") from None


def _key(cxx: str, flags: list[str]) -> str:
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(flags).encode(), _compiler_version(cxx).encode(),
                 _cpu_flags().encode(), str(ABI_VERSION).encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _compile(cxx: str, flags: list[str], dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.stem + ".", suffix=".so.tmp", dir=dst.parent)
    os.close(fd)
    try:
        r = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise KernelBuildError(f"compiling {SOURCE.name} failed ({cxx}):\n{r.stderr[-2000:]}")
        os.replace(tmp, dst)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"compiling {SOURCE.name} failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build(force: bool = False) -> Path:
    """Compile fused.cpp unless a cached build for this source/compiler/CPU exists; return its path."""
    global build_seconds
    cxx = compiler()
    errors = []
    for flags in FLAG_SETS:
        path = cache_dir() / f"fused-{_key(cxx, flags)}.so"
        if path.exists() and not force:
            return path
        t0 = time.perf_counter()
        try:
            _compile(cxx, flags, path)
        except KernelBuildError as e:
            errors.append(str(e))
            continue
        build_seconds = time.perf_counter() - t0
        return path
    raise KernelBuildError("\n".join(errors))


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.gr_abi_version.restype = ctypes.c_int
    if lib.gr_abi_version() != ABI_VERSION:
        raise KernelBuildError("stale kernel library (ABI version mismatch)")
    for name in ("gr_forward", "gr_backward"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    lib.gr_bernoulli.restype = ctypes.c_int
    lib.gr_bernoulli.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.gr_num_parts.restype = ctypes.c_int64
    lib.gr_num_parts.argtypes = [ctypes.c_int64, ctypes.c_int64]
    lib.gr_set_chunks_per_thread.restype = None
    lib.gr_set_chunks_per_thread.argtypes = [ctypes.c_int64]
    lib.gr_set_chunk_rows.restype = None
    lib.gr_set_chunk_rows.argtypes = [ctypes.c_int64]
    lib.gr_advise_huge.restype = None
    lib.gr_advise_huge.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    return lib


def load():
    """The loaded library (building it on first use). Raises KernelBuildError."""
    global _lib, library_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            path = build()
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as e:
                raise KernelBuildError(f"cannot load {path}: {e}") from None
            _lib = _bind(lib)
            library_path = path
    return _lib


def time_fresh_compile() -> float:
    """Seconds a full compile takes here (into a temporary directory; the cache is not touched)."""
    cxx = compiler()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        for flags in FLAG_SETS:
            try:
                _compile(cxx, flags, Path(d) / "fused.so")
                break
            except KernelBuildError:
                continue
        return time.perf_counter() - t0
