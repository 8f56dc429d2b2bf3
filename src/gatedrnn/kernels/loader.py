"""Build (once per machine) and load the fused C++ loops.

The kernels are plain C++ with a C ABI — no torch headers — in several files compiled into one shared
library that ctypes loads: fused.cpp (the loops over time, the C ABI), one file per unit family
(tanh.cpp, gru.cpp, lstm.cpp), readout.cpp, scan.cpp (the linear recurrence of the units without a
recurrent matrix), and the headers common.h, abi.h, unit.h. Every
kernels/*.cpp is compiled, in parallel (one compiler process per file, as many at once as the process
may use CPUs), with the system C++ compiler, then linked. The first build says so on stderr (one line).
The library is cached under `$GATEDRNN_CACHE/kernels` (default `$XDG_CACHE_HOME/gatedrnn`, i.e.
~/.cache/gatedrnn) in `kernels/fused-<key>.so`, where the key hashes the sources, the compiler
command, the compiler version and the CPU's feature flags (it is built with -march=native, so a
cache shared between different machines can never hand one a binary it cannot run).
Concurrent builds are safe: each process compiles into a private temporary directory and renames the
library into place atomically.

`load()` returns the ctypes library or raises `KernelBuildError`; `gatedrnn.kernels.available` turns
that into one warning and the reference loop.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KERNEL_DIR = Path(__file__).parent
SOURCE = KERNEL_DIR / "fused.cpp"   # the loops over time and the C ABI; the unit files beside it
ABI_VERSION = 9
# Compiler CPU seconds of a full build, measured on the 2-vCPU AMD EPYC (Zen 3, GCC 12) of
# docs/KERNELS.md: all files, and the longest one (fused.cpp). The first build announces itself with an
# estimate from these (stderr, one line).
BUILD_CPU_SECONDS, BUILD_LONGEST_SECONDS = 16.0, 5.5
# -fno-trapping-math lets GCC if-convert the float selects of the activations (clamps, the two tanh
# branches), i.e. vectorise the elementwise loops (GCC 12 leaves them scalar without it); it changes no
# result, only what the compiler may assume about floating-point exceptions, which nothing here reads.
_BASE = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-std=c++17",
         "-pthread"]
# -shared applies to the link; the objects are compiled with the rest.
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
    # the project's one cache variable (GATEDRNN_CACHE_DIR: its deprecated alias, as in gatedrnn.data)
    env = os.environ.get("GATEDRNN_CACHE") or os.environ.get("GATEDRNN_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "kernels"
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


def sources() -> list[Path]:
    """The files compiled into the library (every kernels/*.cpp), largest first: the longest compiles
    start first when there are more files than parallel jobs."""
    return sorted(KERNEL_DIR.glob("*.cpp"), key=lambda p: (-p.stat().st_size, p.name))


def _key(cxx: str, flags: list[str]) -> str:
    h = hashlib.sha256()
    for p in sorted([*KERNEL_DIR.glob("*.cpp"), *KERNEL_DIR.glob("*.h")]):
        for part in (p.name.encode(), p.read_bytes()):
            h.update(part)
            h.update(b"\0")
    for part in (" ".join(flags).encode(), _compiler_version(cxx).encode(), _cpu_flags().encode(),
                 str(ABI_VERSION).encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def jobs() -> int:
    """Compiler processes run at once: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _run_all(cmds: list[list[str]], timeout: float) -> list[subprocess.CompletedProcess]:
    """Run the commands, at most jobs() at a time; results in order."""
    run = lambda cmd: subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    with ThreadPoolExecutor(max_workers=min(jobs(), len(cmds))) as ex:
        return list(ex.map(run, cmds))


def _compile(cxx: str, flags: list[str], dst: Path) -> None:
    """Every kernels/*.cpp to an object (in parallel), linked into dst (renamed into place atomically)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    cflags = [f for f in flags if f != "-shared"]
    try:
        with tempfile.TemporaryDirectory(prefix=dst.stem + ".", dir=dst.parent) as d:
            srcs = sources()
            objs = [str(Path(d) / (p.stem + ".o")) for p in srcs]
            done = _run_all([[cxx, *cflags, "-c", str(p), "-o", o] for p, o in zip(srcs, objs)], timeout=600)
            for p, r in zip(srcs, done):
                if r.returncode != 0:
                    raise KernelBuildError(f"compiling {p.name} failed ({cxx}):\n{r.stderr[-2000:]}")
            tmp = str(Path(d) / dst.name)
            r = subprocess.run([cxx, *flags, *objs, "-o", tmp], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise KernelBuildError(f"linking the kernel library failed ({cxx}):\n{r.stderr[-2000:]}")
            os.replace(tmp, dst)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"compiling the kernels failed: {e}") from None


def build_message() -> str:
    """The line the first build prints: the expected time with the files spread over jobs() compiler
    processes on an otherwise idle machine, and a note when the machine is busy."""
    n = jobs()
    est = max(BUILD_CPU_SECONDS / min(n, max(1, len(sources()))), BUILD_LONGEST_SECONDS)
    busy = ""
    try:
        load = os.getloadavg()[0]
        if load > n:
            busy = f"; longer now: load {load:.1f} on {n} CPU{'s' if n > 1 else ''}"
    except (AttributeError, OSError):
        pass
    return f"gatedrnn: compiling the fused kernels (once per machine, ~{max(5, round(est / 5) * 5)} s{busy})…"


def build(force: bool = False) -> Path:
    """Compile the kernels unless a cached build for these sources/compiler/CPU exists; return its path."""
    global build_seconds
    cxx = compiler()
    errors = []
    told = False
    for flags in FLAG_SETS:
        path = cache_dir() / f"fused-{_key(cxx, flags)}.so"
        if path.exists() and not force:
            return path
        if not told:
            print(build_message(), file=sys.stderr, flush=True)
            told = True
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
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    lib.gr_scan_forward.restype = ctypes.c_int
    lib.gr_scan_forward.argtypes = [ctypes.c_int32, i64, i64, i64, i64, vp, vp, vp, vp, vp, vp]
    lib.gr_scan_backward.restype = ctypes.c_int
    lib.gr_scan_backward.argtypes = [ctypes.c_int32, i64, i64, i64, i64, vp, vp, vp, vp, vp, vp, vp, vp]
    i32 = ctypes.c_int32
    lib.gr_gated_scan_forward.restype = ctypes.c_int
    lib.gr_gated_scan_forward.argtypes = [i32, i32, i64, i64, i64, i64, vp, vp, vp, vp, vp]
    lib.gr_gated_scan_backward.restype = ctypes.c_int
    lib.gr_gated_scan_backward.argtypes = [i32, i32, i64, i64, i64, i64, vp, vp, vp, vp, vp, vp, vp]
    lib.gr_bernoulli.restype = ctypes.c_int
    lib.gr_bernoulli.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.gr_num_parts.restype = ctypes.c_int64
    lib.gr_num_parts.argtypes = [ctypes.c_int64, ctypes.c_int64]
    lib.gr_set_chunks_per_thread.restype = None
    lib.gr_set_chunks_per_thread.argtypes = [ctypes.c_int64]
    lib.gr_set_chunk_rows.restype = None
    lib.gr_set_chunk_rows.argtypes = [ctypes.c_int64]
    lib.gr_set_pack_bytes.restype = ctypes.c_int64
    lib.gr_set_pack_bytes.argtypes = [ctypes.c_int64]
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
