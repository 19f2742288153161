"""Reduction: live (bluesky callbacks) and offline (from Tiled), into Tiled.

One package per technique with the same modules (:mod:`.xct`, :mod:`.saxs`),
over one shared core (:mod:`.core`); each registers itself in
``operando.techniques``. How it fits together: ``docs/architecture.md``.
"""
