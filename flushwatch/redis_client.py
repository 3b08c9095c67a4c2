"""One place that decides how flushwatch talks to Redis.

redis-py 8 defaults to RESP3 and to ten jittered retries per command. The roles retry on their own terms
(the writer buffers, the consumers re-read), so the client only smooths over a blip: two quick retries,
then the error reaches the role, which counts it. ``protocol`` is pinned so reply shapes cannot change under
us with a library upgrade.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def connect_redis(url: str, *, socket_timeout: float = 5.0) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        protocol=2,
        socket_timeout=socket_timeout,
        socket_connect_timeout=3.0,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
