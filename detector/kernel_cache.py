"""Where numba keeps the compiled kernels: a directory per version of the code they are compiled from.

numba's cache checks the source file of the function it compiled, not the files of the functions compiled
into it nor the module-level constants it froze in: after an edit of ``detector/fuel.py`` the cached
``fill_external`` of ``detector/extras.py`` kept running the old fuel code (seen here: a stale cache gave other
signals than a fresh compile). So the kernels are cached under ``kernels-<digest>`` of every module they are
built from, inside ``NUMBA_CACHE_DIR`` (or this package's ``__pycache__``), and any change to those modules
starts from an empty directory. Directories of older versions are left for the operator to delete.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba

PACKAGE = Path(__file__).resolve().parent
SOURCES = (PACKAGE, PACKAGE.parent / "flushwatch" / "events.py", PACKAGE.parent / "flushwatch" / "signals.py")
"""The detector package, and the modules whose constants its kernels read (event tags, feature order)."""


def sources_digest(sources: tuple[Path, ...] = SOURCES) -> str:
    """A digest of the Python files in ``sources`` (files, or directories taken one level deep) and their
    names, in name order."""
    files = sorted(f for s in sources for f in (sorted(s.glob("*.py")) if s.is_dir() else [s]))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def use_versioned_cache() -> str:
    """Point numba's cache at this version's directory (before any kernel is compiled or loaded); returns it."""
    base = numba.config.CACHE_DIR or str(PACKAGE / "__pycache__" / "numba")
    path = str(Path(base) / f"kernels-{sources_digest()}")
    numba.config.CACHE_DIR = path
    return path
