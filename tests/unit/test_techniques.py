"""The technique registry and the one shape every technique's reduction has."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import operando.callbacks as callbacks
from operando import techniques

CALLBACKS = Path(callbacks.__file__).parent
SHAPE = {
    "__init__",
    "model",
    "pipeline",
    "experiment",
    "store",
    "figures",
    "live",
    "offline",
    "science",
}


def test_registry_knows_both_techniques():
    assert techniques.names() == ["saxs", "xct"]
    assert techniques.get("xct").run_technique == "xct"
    assert techniques.get("saxs").run_technique == "saxs_waxs"
    assert techniques.for_run({"technique": "saxs_waxs", "step": "ocv"}).name == "saxs"
    assert techniques.for_run({"technique": "xct"}).name == "xct"
    assert techniques.for_run({"technique": "alignment"}) is None
    with pytest.raises(KeyError, match="known: saxs, xct"):
        techniques.get("xrd")


def test_register_a_technique(monkeypatch):
    monkeypatch.setattr(techniques, "_REGISTRY", dict(techniques._REGISTRY))
    t = techniques.register(
        techniques.Technique(
            name="xrd", run_technique="xrd", live_reducer=object, reduce_offline=dict, figures=list
        )
    )
    assert techniques.get("xrd") is t and "xrd" in techniques.names()
    assert techniques.for_run({"technique": "xrd"}) is t


@pytest.mark.parametrize("name", ["xct", "saxs"])
def test_live_reducers_share_one_base(name):
    from operando.callbacks.core import LiveReducer

    reducer = techniques.get(name).live_reducer(None)
    try:
        assert isinstance(reducer, LiveReducer)
        run = techniques.get(name).run_technique
        assert reducer.accepts({"technique": run, "step": reducer.steps[0]})
        assert not reducer.accepts({"technique": run, "step": "alignment"})
        assert reducer.flush(timeout=5)
    finally:
        reducer.close(timeout=5)


def test_both_techniques_have_the_same_modules():
    shapes = {}
    for tech in ("xct", "saxs"):
        shapes[tech] = {
            p.stem
            for p in (CALLBACKS / tech).iterdir()
            if p.suffix == ".py" or (p / "__init__.py").exists()
        }
    assert shapes["xct"] == shapes["saxs"] == SHAPE


def test_callbacks_never_import_the_simulators_or_the_acquisition():
    for path in CALLBACKS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert not any(part in n.split(".") for part in ("iocs", "devices", "plans")), (
                    str(path),
                    n,
                )
