"""The project's own Redis: started on loopback and a free port, answers, stops."""

from operando.services import RedisServer, ping


def test_redis_server_starts_answers_and_stops(tmp_path):
    with RedisServer(tmp_path / "redis") as redis:
        assert redis.uri.startswith("redis://127.0.0.1:")
        assert ping(redis.host, redis.port)
        proc = redis.process
    assert proc.poll() is not None
    assert not ping(redis.host, redis.port)
