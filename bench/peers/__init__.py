"""Side-by-side runs against peers and the machine's limit (``python -m bench --peers``): decode against
cryptofeed, the Redis writer against ``redis-benchmark``, the detector against wickra-radar. The peers are
the ``bench`` extra (``pip install -e '.[bench]'``); a suite whose peer is missing says so and is skipped."""

from __future__ import annotations

from collections.abc import Callable

from bench.peers import cryptofeed_decode, redis_limit, wickra

SUITES: dict[str, Callable[[bool], None]] = {"peers.cryptofeed": cryptofeed_decode.run,
                                            "peers.redis": redis_limit.run, "peers.wickra": wickra.run}
