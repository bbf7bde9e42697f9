"""JSON on the websocket hot path: orjson where it reads or writes a frame, the standard library for what orjson
refuses (NaN, integers beyond 64 bits, unpaired surrogate escapes, non-string keys), so every frame gets the same
answer as with :mod:`json` alone -- only faster."""
from __future__ import annotations

import json
from typing import Any

import orjson


def loads(raw: str | bytes) -> Any:
    """A frame's JSON; raises ValueError when it is not JSON (nested too deep included)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def dumps(value: Any) -> str:
    """Compact JSON text of a frame."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))
