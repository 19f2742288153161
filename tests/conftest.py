"""Fixtures both tiers may use: a RunEngine with its own event loop.

The integration tier's own fixtures (IOC subprocesses, a Tiled server, Channel
Access on loopback) are in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture
def RE():
    """A RunEngine with its own event loop; ``RE.docs`` collects (name, doc) pairs."""
    from bluesky import RunEngine

    loop = asyncio.new_event_loop()
    engine = RunEngine({}, loop=loop, call_returns_result=True)
    engine.docs = []
    engine.subscribe(lambda name, doc: engine.docs.append((name, doc)))
    yield engine
    if engine.state != "idle":
        engine.halt()
    loop.call_soon_threadsafe(loop.stop)
