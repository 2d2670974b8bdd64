"""The API's documentation page: the OpenAPI document read into rows a template lists.

Built from `dashboards.api.OPENAPI` itself, so the page cannot drift from the document (and
`tests/dashboards/test_openapi.py` holds the document to the router). Plain HTML from a
template: the CSP forbids the CDN scripts a Swagger UI would load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameter:
    name: str
    where: str  # "path", "query"
    required: bool
    type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: str
    description: str
    media: str
    shape: str  # "object: patients (array of object)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    method: str  # "GET"
    path: str
    summary: str
    public: bool
    parameters: tuple[Parameter, ...]
    responses: tuple[Response, ...]

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.method} {self.path}".lower()).strip("-")


def operations(document: Mapping[str, Any]) -> list[Operation]:
    """Every operation of the document, in its order of paths, then GET, POST…"""
    found = []
    for path, item in document["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    summary=op.get("summary", ""),
                    public=op.get("security", document.get("security")) == [],
                    parameters=tuple(
                        Parameter(
                            name=p["name"],
                            where=p["in"],
                            required=bool(p.get("required", False)),
                            type=_type(p.get("schema", {})),
                        )
                        for p in op.get("parameters", [])
                    ),
                    responses=tuple(
                        Response(
                            status=status,
                            description=r["description"],
                            media=media,
                            shape=shape(body.get("schema", {})),
                        )
                        for status, r in sorted(op["responses"].items())
                        for media, body in r.get("content", {"": {}}).items()
                    ),
                )
            )
    return found


def _type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "format" in schema:
        text += f" ({schema['format']})"
    if "enum" in schema:
        text += ": " + ", ".join(str(v) for v in schema["enum"])
    return text


def shape(schema: Mapping[str, Any]) -> str:
    """A one-line reading of a response schema: its type and top-level fields."""
    if "const" in schema:
        return repr(schema["const"])
    kind = _type(schema) if "type" in schema else "object"
    fields = schema.get("properties", {})
    if not fields:
        return kind
    required = set(schema.get("required", ()))
    parts = []
    for name, sub in fields.items():
        sub_kind = _type(sub) if "type" in sub else "object"
        if sub.get("type") == "array" and "items" in sub:
            sub_kind = f"array of {sub['items'].get('type', 'object')}"
        parts.append(f"{name}{'' if name in required else '?'} ({sub_kind})")
    return f"{kind}: " + ", ".join(parts)
