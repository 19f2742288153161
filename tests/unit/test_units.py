"""The units table of the reduced results (pure)."""

import ast
from pathlib import Path

from operando.callbacks import units


def test_units_module_imports_nothing_of_the_project():
    tree = ast.parse(Path(units.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert all(not m.startswith(("operando", ".")) for m in imported), imported
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative


def test_describe_known_names_and_suffixes():
    assert units.describe("force") == ("N", "stack force (load cell)")
    assert units.describe("q_saxs")[0] == "nm⁻¹"
    assert units.describe("pressure_peak_mpa")[0] == "MPa"
    assert units.describe("capacity")[0] == "mAh"
    assert units.describe("li2s_size_nm")[0] == "nm"
    assert units.describe("time")[0] == units.describe("t")[0] == "s"
    # names not in the table: the suffix says the unit
    assert units.describe("new_length_um") == ("µm", "")
    assert units.describe("lag_s") == ("s", "")
    assert units.describe("whatever") == ("", "")


def test_nexus_units_are_ascii():
    for unit, _ in units.UNITS.values():
        text = units.nexus_units(unit)
        assert text is None or text.isascii(), (unit, text)
    assert units.nexus_units("µm") == "um"
    assert units.nexus_units("nm⁻¹") == "1/nm"
    assert units.nexus_units("µA/cm²") == "uA/cm^2"
    assert units.nexus_units("mAh") == "mA*h"
    assert units.nexus_units("") is None


def test_metadata_helpers():
    md = units.column_metadata(["t", "force", "plating"])
    assert md["units"] == {"t": "s", "force": "N", "plating": ""}
    assert md["descriptions"]["force"] == "stack force (load cell)"
    assert units.array_metadata("volume")["units"] == ""
    assert "voxel" in units.array_metadata("volume")["description"]
