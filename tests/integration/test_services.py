"""The project's own Redis: started on loopback and a free port, answers, stops."""

from operando.services import RedisServer, ping


def test_redis_server_starts_answers_and_stops(tmp_path):
    with RedisServer(tmp_path / "redis") as redis:
        assert redis.uri.startswith("redis://127.0.0.1:")
        assert ping(redis.host, redis.port)
        proc = redis.process
    assert proc.poll() is not None
    assert not ping(redis.host, redis.port)


def test_redis_does_not_outlive_a_killed_parent(tmp_path):
    """``operando serve --streaming`` SIGKILLed: its Redis goes too (death signal)."""
    import subprocess
    import sys
    import time

    code = (
        "import sys, time\n"
        "from operando.services import RedisServer\n"
        "r = RedisServer(sys.argv[1]).start()\n"
        "print(r.process.pid, r.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "redis")], stdout=subprocess.PIPE, text=True
    )
    pid, port = (int(v) for v in parent.stdout.readline().split())
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and ping("127.0.0.1", port):
        time.sleep(0.1)
    try:
        assert not ping("127.0.0.1", port), f"redis-server {pid} outlived its parent"
    finally:
        try:
            import os
            import signal

            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
