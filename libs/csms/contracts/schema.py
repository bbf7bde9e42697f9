"""JSON Schema as the standard spells it, from pydantic's.

pydantic writes a numeric bound it could not attach to the type (a ``Field(ge=..)`` after a ``BeforeValidator``,
as in ``Int32``) under its own name: ``ge``, ``le``, ``gt``, ``lt``. No JSON Schema validator reads those, so a
document carrying them states no bound at all. :func:`standard_bounds` renames them to ``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum``; the generated documents (AsyncAPI, OpenAPI) and the CLI's help use it.
"""
from __future__ import annotations

from typing import Any

# pydantic's name -> (JSON Schema keyword, the tighter of two bounds)
CONSTRAINTS = {"ge": ("minimum", max), "le": ("maximum", min), "gt": ("exclusiveMinimum", max),
               "lt": ("exclusiveMaximum", min)}


def standard_bounds(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` (one schema object, changed in place) with pydantic's bound names as JSON Schema keywords; when
    both are present the tighter one is kept (both apply when pydantic validates)."""
    if "type" not in node:
        return node
    for constraint, (keyword, tighter) in CONSTRAINTS.items():
        value = node.get(constraint)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bound = node.pop(constraint)
            node[keyword] = tighter(bound, node[keyword]) if keyword in node else bound
    return node


def standardise(node: Any) -> Any:
    """:func:`standard_bounds` on every schema object under ``node`` (a whole document too), in place."""
    if isinstance(node, list):
        for item in node:
            standardise(item)
    elif isinstance(node, dict):
        for value in node.values():
            standardise(value)
        standard_bounds(node)
    return node


# a CommandResult whose status is answered: its payload is the charge point's CALLRESULT (the documents type it
# with if/then; other statuses carry no payload, or for invalid_response the answer that broke the schema)
ANSWERED = {"properties": {"status": {"const": "answered"}}, "required": ["status"]}
