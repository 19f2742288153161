"""The embedded Tiled's catalog URI: SQLite by default, PostgreSQL on request."""

import re
from pathlib import Path

import pytest

from operando.tiled_server import DataLayout, server_config, tables_uri_for

PG = "postgresql+asyncpg://operando@db.example:5433/catalog"


def _tree_args(config):
    (tree,) = config["trees"]
    return tree["args"]


def test_sqlite_catalog_and_tables_by_default(tmp_path):
    layout = DataLayout.at(tmp_path)
    args = _tree_args(server_config(layout))
    assert args["uri"] == str(tmp_path / "catalog.db")
    assert args["writable_storage"] == [
        str(tmp_path / "arrays"),
        f"sqlite:///{tmp_path}/tables.sqlite",
    ]


def test_a_data_root_made_before_keeps_its_duckdb_tables(tmp_path):
    (tmp_path / "tables.duckdb").touch()  # written by an earlier version
    args = _tree_args(server_config(DataLayout.at(tmp_path)))
    assert args["writable_storage"][1] == f"duckdb:///{tmp_path}/tables.duckdb"


def test_postgres_catalog_puts_the_tables_beside_it_without_the_role(tmp_path):
    layout = DataLayout.at(tmp_path, catalog_uri=PG)
    assert layout.tables_uri == "postgresql://db.example:5433/tables"
    args = _tree_args(server_config(layout, readable=[Path("/srv/frames")]))
    assert args["uri"] == PG
    assert args["writable_storage"] == [str(tmp_path / "arrays"), layout.tables_uri]
    assert args["readable_storage"] == [str(tmp_path / "frames"), "/srv/frames"]
    assert tables_uri_for("postgresql+asyncpg://u@h/catalog", "t") == "postgresql://h/t"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("postgresql://operando@db/catalog", "postgresql+asyncpg"),
        ("postgresql+asyncpg://operando:secret@db/catalog", "password"),
        ("postgresql+asyncpg://db", "database name"),
        ("mysql://db/catalog", "SQLite or postgresql"),
    ],
)
def test_bad_catalog_uris_are_refused_before_anything_starts(tmp_path, uri, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DataLayout.at(tmp_path, catalog_uri=uri)


def test_extra_sections_extend_the_configuration(tmp_path):
    config = server_config(
        DataLayout.at(tmp_path),
        extra={"streaming_cache": {"uri": "redis://127.0.0.1:1"}, "authentication": {"x": 1}},
    )
    assert config["streaming_cache"] == {"uri": "redis://127.0.0.1:1"}
    assert config["authentication"] == {"allow_anonymous_access": False, "x": 1}


def test_catalog_initialized_only_once(tmp_path):
    """Tiled is asked to initialize the SQLite catalog (a subprocess of its own at
    each start) only while it has no schema; a PostgreSQL catalog always."""
    import sqlite3

    layout = DataLayout.at(tmp_path)
    assert _tree_args(server_config(layout))["init_if_not_exists"] is True
    layout.catalog.write_bytes(b"not a database")
    assert _tree_args(server_config(layout))["init_if_not_exists"] is True
    layout.catalog.unlink()
    con = sqlite3.connect(layout.catalog)
    con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    con.commit()
    assert _tree_args(server_config(layout))["init_if_not_exists"] is True  # no version yet
    con.execute("INSERT INTO alembic_version VALUES ('a1b2c3')")
    con.commit()
    con.close()
    assert _tree_args(server_config(layout))["init_if_not_exists"] is False
    pg = DataLayout.at(tmp_path, catalog_uri=PG)
    assert _tree_args(server_config(pg))["init_if_not_exists"] is True
