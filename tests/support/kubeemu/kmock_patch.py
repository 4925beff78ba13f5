"""A fix for kmock 0.8's request-path parser, applied on import (the emulator imports it first)."""

from __future__ import annotations

from kmock._internal import parsing

from . import semantics as sem

_kmock_parse_path = parsing.parse_path


def _parse_path_fixed(path: str) -> parsing.ParsedPath:
    """kmock 0.8 raises on `/api/v1/namespaces` (kopf lists it); fall back to our parser for the request log."""
    try:
        return _kmock_parse_path(path)
    except ValueError:
        p = sem.parse_path(path)
        assert p is not None
        return parsing.ParsedPath(p.group, p.version, p.plural, p.namespace, p.name, p.subresource)


parsing.parse_path = _parse_path_fixed  # rendering.Request._parse looks it up on the module at call time
