import redis

from flushwatch.servers import RunningServer, free_port


def test_private_redis_answers(redis_server: RunningServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping() is True
    client.xadd("k", {"a": "1"})
    assert client.xlen("k") == 1


def test_free_ports_are_never_handed_out_twice() -> None:
    """A port is free only until its user binds it: two servers started one after the other must not both be
    given the one the kernel offers again meanwhile."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
