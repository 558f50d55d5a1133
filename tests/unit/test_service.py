from __future__ import annotations

import pytest

from services.kit import CONTEXT, ServiceSpec, Settings, build_app
from services.kit.backplane import MemoryBackplane


def settings(service: str) -> Settings:
    return Settings(service=service, token_secret="s" * 32)


def test_a_service_state_is_what_its_setup_returned():
    made: list[object] = []

    def setup(app, ctx) -> list[object]:
        made.append(ctx)
        return made

    app = build_app(settings("stateful"), ServiceSpec(name="stateful", setup=setup))
    ctx = app[CONTEXT]
    assert ctx.state is made and made == [ctx]


def test_a_service_without_setup_has_no_state_and_says_so():
    app = build_app(settings("plain"), ServiceSpec(name="plain"), MemoryBackplane())
    with pytest.raises(LookupError, match="plain has no state"):
        _ = app[CONTEXT].state
