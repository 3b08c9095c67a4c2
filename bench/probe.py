"""``flushwatch run`` as the CLI runs it, recording when each snapshot becomes visible on ``/metrics``.

    python -m bench.probe OUT.npy        (settings from the environment, as for ``flushwatch run``)

The alert role hands every snapshot to the exporter, which ``/metrics`` reads on each scrape: from the
moment ``AssetStateCollector.update`` returns, the values are visible. The probe times that moment against
the snapshot's ``ts_recv`` (receipt of the newest frame behind it, this machine's clock) and saves the
latencies in ns when the daemon exits, so a benchmark gets every sample instead of histogram buckets.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from alerts.exporter import AssetStateCollector
from flushwatch.cli import app
from flushwatch.signals import AssetState


def main(out: str) -> None:
    visible: list[int] = []
    update = AssetStateCollector.update

    def timed(self: AssetStateCollector, state: AssetState) -> None:
        update(self, state)
        visible.append(time.time_ns() - state.ts_recv)

    AssetStateCollector.update = timed  # type: ignore[method-assign]
    try:
        app(["run"], prog_name="flushwatch")
    finally:
        np.save(out, np.array(visible, dtype=np.int64))


if __name__ == "__main__":
    main(sys.argv[1])
