"""The techniques this project reduces, looked up by name: a small registry.

Each technique is a :class:`Technique`: its name (as the command line says it),
the start-document ``technique`` of the runs it reduces, a live reducer factory,
an offline reduction and its figures. Each technique's package under
``callbacks/`` makes one and registers it; :func:`get`, :func:`names` and
:func:`for_run` load the built-in ones on first use. Adding a technique:
``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

__all__ = ["Technique", "register", "get", "names", "for_run", "lazy", "BUILTIN"]

#: the packages of the built-in techniques (each registers itself when imported)
BUILTIN = ("operando.callbacks.xct", "operando.callbacks.saxs")


@dataclass(frozen=True)
class Technique:
    """One technique's entry points.

    * ``live_reducer(client, *, figures_dir=None, **options)``: a bluesky
      callback reducing runs as they are taken (``flush``/``close`` methods);
    * ``reduce_offline(client, uid_or_experiment_id, *, figures_dir=None,
      **options) -> dict``: a stored experiment reduced again from Tiled;
    * ``figures(figure_data, directory, **options) -> list[str]``: the
      experiment's figures from its state's ``figure_data()``.
    """

    name: str
    #: the start document's ``technique`` of the runs it reduces
    run_technique: str
    live_reducer: Callable[..., Any]
    reduce_offline: Callable[..., dict]
    figures: Callable[..., list]
    description: str = ""

    def accepts(self, start: Mapping) -> bool:
        """Whether this technique reduces the run of this start document."""
        return start.get("technique") == self.run_technique


def lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported at its first call: registering a technique stays cheap
    (no pyFAI, no reconstruction until a reduction runs)."""

    def call(*args, **kwargs):
        return getattr(import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f":func:`{module}.{name}`, imported at its first call."
    return call


_REGISTRY: dict[str, Technique] = {}
_loaded = False


def register(technique: Technique) -> Technique:
    """Add (or replace) a technique under its name; returns it."""
    _REGISTRY[technique.name] = technique
    return technique


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            import_module(module)


def get(name: str) -> Technique:
    """The technique called ``name`` (KeyError, listing the known ones, if none)."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no technique {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    """The names of the registered techniques, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def for_run(start: Mapping) -> Technique | None:
    """The technique that reduces the run of this start document, or None."""
    _load_builtin()
    return next((t for t in _REGISTRY.values() if t.accepts(start)), None)
