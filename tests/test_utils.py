"""gatedrnn.utils: what every run records about the code and the machine it ran on."""
from __future__ import annotations

import hashlib

from gatedrnn import utils


def _tree(root, files):
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(root)


def test_source_digest_is_the_sha256_of_the_source_files_and_nothing_else(tmp_path):
    files = {"a.py": "x = 1\n", "kernels/k.cpp": "int f();\n", "kernels/k.h": "#pragma once\n"}
    root = _tree(tmp_path / "one", {**files, "notes.txt": "not code", "data/x.sha256": "abc"})
    h = hashlib.sha256()       # independent re-derivation: relative path, NUL, bytes, NUL, in path order
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    assert utils.source_digest(root) == h.hexdigest()[:16]
    # a changed line of C++ is another code version; a changed non-source file is not
    assert utils.source_digest(_tree(tmp_path / "two", {**files, "kernels/k.cpp": "int g();\n"})) != h.hexdigest()[:16]
    assert utils.source_digest(_tree(tmp_path / "three", {**files, "notes.txt": "other"})) == h.hexdigest()[:16]


def test_environment_records_the_code_and_the_cpus_vector_isa(tmp_path):
    env = utils.environment()
    assert env["source"] == utils.source_digest() and len(env["source"]) == 16
    assert env["cpu_isa"] in (*utils._ISAS, "")
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    if " avx2" in flags:                          # the widest ISA wins (avx2 over avx; avx512f over both)
        assert env["cpu_isa"] in ("avx2", "avx512f")
