import redis

from flushwatch.servers import RunningServer


def test_private_redis_answers(redis_server: RunningServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping() is True
    client.xadd("k", {"a": "1"})
    assert client.xlen("k") == 1
