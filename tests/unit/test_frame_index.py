"""Which frame of the detector's file an event refers to (pure logic: the
detector's PVs replaced by soft ophyd signals, the IOC played by the test).

A suspension drops the waits in progress (``abandon_pending_completions``)
before the RunEngine pauses the devices; the acquisition it abandoned must not
take a frame index, or every event after it would refer to the frame after its
own (and the last to a frame that never comes)."""

from __future__ import annotations

import pytest
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import Status

from operando.devices import common
from operando.devices.common import FrameLost, HDF5AreaDetector


class _Acquire(Signal):
    """``set(1)`` starts an acquisition the test ends (``inner``), guarded as the
    real command is; ``put(0)`` (an abort) is noted."""

    pvname = "TEST:cam:Acquire"

    def put(self, value, **kwargs):
        super().put(value)

    def set(self, value, **kwargs):
        self.inner = Status()
        return common._Guard.around(lambda: self.inner, self, expected=1.0)


class _Cam(Device):
    acquire = Cpt(_Acquire)
    acquire_time = Cpt(Signal, value=1.0)
    num_exposures = Cpt(Signal, value=1)
    acquiring = Cpt(Signal, value=0)
    array_counter = Cpt(Signal, value=0)
    size_x = Cpt(Signal, value=4)
    size_y = Cpt(Signal, value=3)


class _HDF(Device):
    file_path = Cpt(Signal, value="")
    file_name = Cpt(Signal, value="")
    file_number = Cpt(Signal, value=1)
    full_file_name = Cpt(Signal, value="/data/det_000001.h5")
    capture = Cpt(Signal, value=1)
    capture_rbv = Cpt(Signal, value=1)
    num_captured = Cpt(Signal, value=0)
    truncate = Cpt(Signal, value=0)


class _Detector(HDF5AreaDetector):
    cam = Cpt(_Cam, "cam:")
    hdf1 = Cpt(_HDF, "HDF1:")


@pytest.fixture
def det():
    common.abandon_pending_completions()  # none left by other tests' guards
    d = _Detector("TEST:", name="det", write_path="/data")
    d._new_resource()
    d._assets.clear()
    return d


def _frame(det) -> None:
    """The IOC writes a frame, then completes the put."""
    det.hdf1.num_captured.put(det.hdf1.num_captured.get() + 1)
    det.cam.acquire.inner.set_finished()


def _indices(det) -> list[int]:
    return [doc["indices"]["start"] for name, doc in det.collect_asset_docs()]


def _taken(det, st) -> list[int]:
    """The event's frame: the status waited on, its datum collected (the RunEngine's save)."""
    st.wait(5)
    return _indices(det)


def test_each_event_refers_to_its_own_frame(det):
    seen = []
    for _ in range(3):
        st = det.trigger()
        _frame(det)
        seen += _taken(det, st)
    assert seen == [0, 1, 2]


def test_an_acquisition_a_suspension_abandoned_takes_no_index(det):
    st = det.trigger()
    _frame(det)
    assert _taken(det, st) == [0]
    st = det.trigger()
    assert common.abandon_pending_completions() == 1  # the suspension
    assert _taken(det, st) == []
    det.pause()  # then the RunEngine pauses the devices; the IOC dropped the frame
    det.resume()  # the file holds the one frame the events refer to: nothing to drop
    st = det.trigger()  # the point taken again
    _frame(det)
    assert _taken(det, st) == [1]


def test_a_frame_the_abandoned_acquisition_still_wrote_is_not_referred_to(det):
    st = det.trigger()
    common.abandon_pending_completions()
    assert _taken(det, st) == []
    det.hdf1.num_captured.put(1)  # the abort came too late: the IOC wrote it
    det.pause()
    st = det.trigger()
    _frame(det)
    assert _taken(det, st) == [1]  # the frame taken again, not the orphan at 0


def test_an_acquisition_that_ended_without_a_frame_is_an_error(det):
    st = det.trigger()
    det.cam.acquire.inner.set_finished()  # completed, nothing written
    with pytest.raises(FrameLost, match="holds 0 frames"):
        st.wait(5)
    assert _indices(det) == []
