"""Coverage-guided fuzzing of one venue parser with atheris (libFuzzer), next to the hypothesis tests.

    python3 -m pip install atheris
    python3 fuzz/parsers.py okx /tmp/corpus-okx -max_total_time=90 -max_len=8192

The corpus folder is seeded with the venue's real frames (``../shared/data``, through the seeds of
``tests/test_fuzz_parsers.py``) when empty, and grows with every input that reached new code; keep it outside
the checkout. Each input goes to a freshly primed parser and must keep the same invariants as the hypothesis
sequences (``tests/test_fuzz_parsers.sane``): an exception or a broken invariant stops the run and leaves a
``crash-*`` file with the input. Replaying a corpus under ``coverage`` measures what it reaches:

    python3 -m coverage run --branch fuzz/parsers.py okx /tmp/corpus-okx -runs=0
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

with atheris.instrument_imports(include=["collectors"]):  # the parsers, for libFuzzer's coverage feedback
    from test_fuzz_parsers import VENUES, _json, sane


def main() -> None:
    venue, corpus = VENUES[sys.argv[1]], Path(sys.argv[2])
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for i, seed in enumerate(venue.seeds()):
            (corpus / f"seed-{i}").write_bytes(_json(seed))

    def one(frame: bytes) -> None:
        ts_recv = time.time_ns()
        sane(venue, frame, venue.parser().parse(frame, ts_recv), ts_recv)

    atheris.Setup([sys.argv[0], *sys.argv[3:], os.fspath(corpus)], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
