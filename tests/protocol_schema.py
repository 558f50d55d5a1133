"""docs/asyncapi.yaml as validators: the schema of each server frame, by service and op."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ASYNCAPI = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
#: ops whose schema has another name in a service (the admin's `presence` reply)
RENAMED = {("admin", "presence"): "adminPresence"}


@functools.cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text())
    return loaded


@functools.cache
def validator(schema_name: str) -> jsonschema.Draft7Validator:
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": document()["components"]}
    return jsonschema.Draft7Validator(root)


def server_messages(service: str) -> set[str]:
    """The schema names of what ``service``'s channel says the server sends."""
    operation = f"receive{service.capitalize()}"
    refs = document()["operations"][operation]["messages"]
    names = set()
    for ref in refs:
        message_key = ref["$ref"].rsplit("/", 1)[1]
        payload = document()["components"]["messages"][message_key]["payload"]["$ref"]
        names.add(payload.rsplit("/", 1)[1])
    return names


def problems(service: str, frame: Any) -> list[str]:
    """Why ``frame`` (sent by ``service``) does not match the document; [] when it does."""
    if f"receive{service.capitalize()}" not in document()["operations"]:
        return []  # a test's own stand-in service, not part of the protocol
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        return [f"{service}: a frame without an op: {frame!r:.200}"]
    name = RENAMED.get((service, frame["op"]), frame["op"])
    if name not in server_messages(service):
        return [f"{service}: op {frame['op']!r} is not in docs/asyncapi.yaml for {service}"]
    return [
        f"{service} {frame['op']}: {error.message} at {list(error.absolute_path)}"
        for error in validator(name).iter_errors(frame)
    ]
