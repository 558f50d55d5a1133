"""Render docs/asyncapi.yaml as docs/asyncapi.md (a table per service and direction):
``uv run python -m tools.asyncapi_markdown > docs/asyncapi.md``. A unit test keeps the
two in step."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["render"]

SOURCE = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"


def render(document: dict[str, Any]) -> str:
    schemas = document["components"]["schemas"]
    messages = document["components"]["messages"]
    lines = [
        "# wwws protocol: the AsyncAPI document, rendered",
        "",
        "Generated from [asyncapi.yaml](asyncapi.yaml) by `python -m tools.asyncapi_markdown`;"
        " the prose, with the rules behind each frame, is [protocol.md](protocol.md).",
        "Fields in **bold** are required.",
    ]
    for operation in document["operations"].values():
        channel = document["channels"][operation["channel"]["$ref"].rsplit("/", 1)[1]]
        direction = "server → client" if operation["action"] == "receive" else "client → server"
        lines += ["", f"## `{channel['address']}`: {direction}", ""]
        lines += ["| op | fields |", "|---|---|"]
        for ref in operation["messages"]:
            message = messages[channel["messages"][ref["$ref"].rsplit("/", 1)[1]]["$ref"]
                               .rsplit("/", 1)[1]]  # fmt: skip
            schema = _resolve(schemas, message["payload"])
            lines.append(f"| `{message['name']}` | {_fields(schemas, schema)} |")
    return "\n".join(lines) + "\n"


def _resolve(schemas: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[1]


def _fields(schemas: dict[str, Any], schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    parts = []
    for field, spec in schema.get("properties", {}).items():
        if field == "op":
            continue
        label = f"**{field}**" if field in required else field
        parts.append(f"{label}: {_type(schemas, spec)}")
    return ", ".join(parts) or "—"


def _type(schemas: dict[str, Any], spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return _name(str(spec["$ref"]))
    if "const" in spec:
        return f"`{spec['const']}`"
    if "enum" in spec:
        return " \\| ".join(f"`{value}`" for value in spec["enum"])
    if spec.get("type") == "array":
        return f"[{_type(schemas, spec.get('items', {}))}]"
    return str(spec.get("type", "any"))


def main() -> int:
    sys.stdout.write(render(yaml.safe_load(SOURCE.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
