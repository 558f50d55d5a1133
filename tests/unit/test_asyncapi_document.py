"""docs/asyncapi.yaml is a well-formed AsyncAPI 3 document whose references all resolve,
its client frame schemas accept the frames the shipped clients send and refuse broken
ones, and docs/asyncapi.md is its current rendering."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from protocol_schema import ASYNCAPI, document, validator

from tools.asyncapi_markdown import render


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_resolves():
    doc = document()
    assert doc["asyncapi"].startswith("3.")
    for ref in _refs(doc):
        target: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, ref
            target = target[part]
    for name in doc["components"]["schemas"]:
        jsonschema.Draft7Validator.check_schema(doc["components"]["schemas"][name])


@pytest.mark.parametrize(
    ("schema", "frame", "valid"),
    [
        ("sub", {"op": "sub", "id": 1, "ch": "lobby", "since": {"epoch": "a1", "offset": 3}}, True),
        ("sub", {"op": "sub", "ch": "lobby", "since": {"offset": -1, "epoch": "x"}}, False),
        ("pub", {"op": "pub", "ch": "lobby", "data": {"text": "hi"}, "idem": "k1"}, True),
        ("pub", {"op": "pub", "ch": "lobby", "data": "not an object"}, False),
        ("historyRequest", {"op": "history", "ch": "lobby", "limit": 101}, False),
        ("watch", {"op": "watch", "users": ["ann", "bob"]}, True),
        ("call", {"op": "call", "to": "bob"}, True),
        ("callAction", {"op": "answer", "call_id": "c1"}, True),
        ("refreshRequest", {"op": "refresh", "token": "x.y.z"}, True),
        ("refreshRequest", {"op": "refresh"}, False),
    ],
)
def test_client_frame_schemas(schema, frame, valid):
    assert validator(schema).is_valid(frame) is valid


def test_the_rendered_markdown_is_current():
    rendered = render(yaml.safe_load(ASYNCAPI.read_text()))
    current = Path(ASYNCAPI).with_suffix(".md").read_text()
    assert rendered == current, "run: uv run python -m tools.asyncapi_markdown > docs/asyncapi.md"
