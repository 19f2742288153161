"""Channel Access helpers for tests that talk to an IOC subprocess directly.

One caproto threading-client context per test module (persistent circuits),
dropped after each module by the autouse ``ca_context`` fixture (``conftest.py``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from caproto import ChannelType, ErrorResponseReceived
from caproto.threading.client import Context

_ca: dict = {}


def _pv(name):
    if "ctx" not in _ca:
        _ca["ctx"] = Context()
    pvs = _ca.setdefault("pvs", {})
    if name not in pvs:
        (pvs[name],) = _ca["ctx"].get_pvs(name, timeout=30)
        pvs[name].wait_for_connection(timeout=30)
    return pvs[name]


def disconnect():
    """Drop the context and its channels (if any were made)."""
    ctx = _ca.pop("ctx", None)
    _ca.pop("pvs", None)
    if ctx is not None:
        ctx.disconnect()


def _read(name, data_type=None):
    return _pv(name).read(data_type=data_type, timeout=30)


def get(pv):
    """The scalar value of a numeric PV (enums as their index)."""
    data = _read(pv).data
    assert len(data) == 1, pv
    return data[0]


def get_str(pv):
    """A char-array PV (FilePath, JSON, ...) as str."""
    return np.asarray(_read(pv).data, dtype=np.uint8).tobytes().split(b"\0")[0].decode()


def get_enum(pv):
    """An enum (or string) PV as str."""
    return _read(pv, data_type=ChannelType.STRING).data[0].decode()


def ctrl(pv):
    """Control metadata (limits, alarm limits, severity) of a float PV."""
    return _read(pv, data_type=ChannelType.CTRL_DOUBLE).metadata


def put(pv, value, *, wait=True, timeout=10.0):
    """Write a number, a string (enum or char array) or an array."""
    chan = _pv(pv)
    if isinstance(value, str):
        if chan.channel.native_data_type == ChannelType.CHAR:
            chan.write(
                np.frombuffer(value.encode() + b"\0", dtype=np.uint8), wait=wait, timeout=timeout
            )
        else:
            chan.write([value.encode()], wait=wait, timeout=timeout, data_type=ChannelType.STRING)
        return
    chan.write([value] if np.isscalar(value) else value, wait=wait, timeout=timeout)


def put_rejected(pv, value):
    """A put with completion that the IOC refuses (the sync client reports the
    server's error at once; the threading client would wait for its timeout)."""
    from caproto.sync.client import write

    with pytest.raises(ErrorResponseReceived):  # the timeout covers the PV's search
        write(pv, value, notify=True, timeout=30, repeater=False)


def wait_for(predicate, timeout=10.0, period=0.02):
    """Poll ``predicate`` until it is truthy (for IOC-side state in IOC tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(period)


def acquire_while_reading(acquire_pv, clock_pv, *, read_for=0.2, timeout=20.0):
    """Start an acquisition, read ``clock_pv`` meanwhile, then acquire a second
    frame (queued behind the first) with completion.

    Returns ``(reads, elapsed)``: the clock values read during the first frame
    (the IOC must keep answering: it awaits the clock and renders in a worker
    thread) and the cell time the two frames took.
    """
    ctx = Context()
    try:
        acquire, clock = ctx.get_pvs(acquire_pv, clock_pv, timeout=30)
        t0 = clock.read().data[0]
        start = time.monotonic()
        acquire.write(1, wait=False, callback=lambda *a: None)
        reads = []
        while time.monotonic() - start < read_for:
            reads.append(clock.read(timeout=1).data[0])
        acquire.write(1, wait=True, timeout=timeout)
        return reads, clock.read().data[0] - t0
    finally:
        ctx.disconnect()
