"""Compiled kernels are cached per version of the code they are built from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from detector.kernel_cache import PACKAGE, SOURCES, sources_digest


def test_the_digest_follows_the_sources_of_the_kernels(tmp_path: Path) -> None:
    copy = tmp_path / "detector"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    others = [shutil.copy(s, tmp_path / s.name) for s in SOURCES[1:]]
    sources = (copy, *map(Path, others))
    assert sources_digest(sources) == sources_digest()  # where the files live does not matter
    fuel = copy / "fuel.py"
    fuel.write_text(fuel.read_text() + "\n# an edit of a module other kernels compile in\n")
    edited = sources_digest(sources)
    assert edited != sources_digest()
    signals = Path(others[1])
    signals.write_text(signals.read_text().replace('"price",', '"r1m",\n    "price",', 1))
    assert sources_digest(sources) not in (edited, sources_digest())  # a constant the kernels freeze in


def test_kernels_compile_into_this_versions_directory(tmp_path: Path) -> None:
    code = ("import numba, numpy as np\n"
            "from detector.sums import interleaved_sum\n"
            "assert interleaved_sum(np.arange(5.0), 0, 5) == 10.0\n"
            "print(numba.config.CACHE_DIR)\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=PACKAGE.parent, check=True)
    versioned = tmp_path / f"kernels-{sources_digest()}"
    assert out.stdout.strip() == str(versioned)
    cached = [p.name for p in tmp_path.rglob("*.nbi")]
    assert cached and all(versioned in p.parents for p in tmp_path.rglob("*.nbi")), cached
