"""The queue-facing plans (operando.plans.queue) against the station plans they wrap:
same defaults, every argument exposed, annotations the queue server can process."""

import inspect
from types import SimpleNamespace

import pytest
from bluesky_queueserver.manager.profile_ops import _process_plan, validate_plan

from operando.plans import queue, saxs, xct

#: where a queue plan's defaults come from (the radiogram stub has none of its own)
WRAPPED = {
    "xct_scan3d": xct.scan3d,
    "xct_radiogram": xct.scan3d,
    "xct_plating": xct.plating,
    "xct_postmortem": xct.scan3d,
    "xct_protocol": xct.xct_operando,
    "saxs_align": saxs.align,
    "saxs_background": saxs.background,
    "saxs_raster": saxs.raster,
    "saxs_protocol": saxs.saxs_waxs_operando,
}
#: arguments a queue cannot give (a station, an object) or that a queue plan sets itself
NOT_QUEUED = {
    "xct_scan3d": {"station", "step"},
    "xct_plating": {"station"},
    "xct_protocol": {"station", "catalog"},
    "saxs_align": {"station"},
    "saxs_background": {"station"},
    "saxs_raster": {"station"},
    "saxs_protocol": {"station", "bounds", "catalog"},
}
#: defaults that differ on purpose (None: the last alignment's grid centre)
OWN_DEFAULTS = {"saxs_background": {"x", "y"}}


def _motor(lo=-5.0, hi=5.0):
    return SimpleNamespace(limits=(lo, hi))


def _pstat(*modes):
    return SimpleNamespace(
        mode=SimpleNamespace(enum_strs=modes), current_sp=SimpleNamespace(limits=(-0.1, 0.1))
    )


def _stations():
    xct_station = SimpleNamespace(
        pstat=_pstat("OCV", "CC"),
        force=None,
        clock=None,
        source=SimpleNamespace(filter=SimpleNamespace(enum_strs=("None", "LE1", "LE2"))),
        ct_det=SimpleNamespace(
            cam=SimpleNamespace(objective=SimpleNamespace(enum_strs=("4X", "20X"))), name="ct"
        ),
        stage=SimpleNamespace(th=_motor(-720, 720)),
    )
    saxs_station = SimpleNamespace(
        stage=SimpleNamespace(x=_motor(), y=_motor(-2, 3)), pstat=_pstat("OCV", "CC", "GCPL")
    )
    plans = {}
    plans.update(queue._xct_plans(xct_station))
    plans.update(queue._saxs_plans(saxs_station))
    return plans


PLANS = _stations()


def _defaults(func):
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_every_station_plan_has_its_queue_plan():
    assert set(PLANS) == set(queue.QUEUE_PLANS) | set(queue.TECHNIQUE_PLANS)
    assert set(queue.QUEUE_PLANS) == set(WRAPPED)


@pytest.mark.parametrize("name", sorted(WRAPPED))
def test_defaults_are_the_station_plans(name):
    mine, theirs = _defaults(PLANS[name]), _defaults(WRAPPED[name])
    shared = (set(mine) & set(theirs)) - OWN_DEFAULTS.get(name, set())
    assert shared, name
    for key in shared:
        a, b = mine[key], theirs[key]
        a, b = (tuple(v) if isinstance(v, (list, tuple)) else v for v in (a, b))
        assert a == b, f"{name}({key}=...): {mine[key]!r} here, {theirs[key]!r} in the plan"


@pytest.mark.parametrize("name", sorted(NOT_QUEUED))
def test_every_argument_is_exposed(name):
    mine = set(inspect.signature(PLANS[name]).parameters)
    theirs = set(inspect.signature(WRAPPED[name]).parameters) - NOT_QUEUED[name]
    assert theirs <= mine, f"{name} lacks {sorted(theirs - mine)}"


def test_annotations_validate_plain_values():
    allowed = {
        name: _process_plan(func, existing_devices={}, existing_plans={})
        for name, func in PLANS.items()
    }

    def ok(name, **kwargs):
        return validate_plan(
            {"name": name, "kwargs": kwargs}, allowed_plans=allowed, allowed_devices={}
        )

    assert ok("xct_scan3d", num_projections=3, filter="LE2", objective="20X")[0]
    assert ok("xct_scan3d", filter="HE9")[1].count("Input should be")
    assert not ok("xct_scan3d", objective="10X")[0]
    assert not ok("xct_scan3d", start=-800.0)[0]
    assert not ok("xct_postmortem", scans=["overview", "closeup"])[0]
    assert ok("xct_postmortem", scans=["highres"])[0]
    assert not ok("xct_plating")[0]  # current_density is required
    assert ok("saxs_raster", x_range=[-1, 1], y_range=[0, 1], shape=[2, 3])[0]
    assert not ok("saxs_raster", x_range=[-6, 1])[0]  # outside the stage's limits
    assert not ok("saxs_protocol", shape=[2, 2.5])[0]
    assert ok("saxs_technique", mode="GCPL", current=1e-3, cycles=2)[0]
    assert not ok("xct_technique", mode="GCPL")[0]  # the XCT potentiostat has no cycling
    assert not ok("xct_technique", mode="CC", current=1.0)[0]  # beyond the instrument


def test_http_api_key_from_environment_or_private_file(tmp_path, monkeypatch):
    from operando.queue import API_KEY_ENV, QueueLayout, api_key

    paths = QueueLayout(tmp_path / "queue")
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    key = api_key(paths)
    assert key.isalnum() and len(key) >= 32
    assert paths.api_key_file.stat().st_mode & 0o777 == 0o600
    assert api_key(paths) == key  # made once
    monkeypatch.setenv(API_KEY_ENV, "abc123")
    assert api_key(paths) == "abc123"
    monkeypatch.setenv(API_KEY_ENV, "not-alphanumeric")
    with pytest.raises(ValueError, match=API_KEY_ENV):
        api_key(paths)


def test_profile_starts_no_service_under_the_queue_server(tmp_path, monkeypatch):
    """The RE Worker runs no atexit handler: the profile must not start IOCs or Tiled there."""
    from bluesky_queueserver import clear_re_worker_active, set_re_worker_active

    from operando import profile

    for var in ("OPERANDO_TILED_URI", "OPERANDO_XCT_PREFIX", "OPERANDO_SAXS_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPERANDO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "127.0.0.1")  # nothing else set in os.environ
    set_re_worker_active()
    try:
        assert profile.under_queue_server()
        with pytest.raises(RuntimeError, match="OPERANDO_TILED_URI"):
            profile.connect_tiled()
        with pytest.raises(RuntimeError, match="OPERANDO_XCT_PREFIX"):
            profile.xct_station()
        with pytest.raises(RuntimeError, match="OPERANDO_SAXS_PREFIX"):
            profile.saxs_station()
    finally:
        clear_re_worker_active()
    assert not profile.under_queue_server()
