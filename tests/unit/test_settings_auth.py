from __future__ import annotations

import time

import jwt
import pytest

from services.kit.auth import (
    AuthError,
    TokenVerifier,
    check_origin,
    mint_token,
    query_token,
    verify_token,
)
from services.kit.settings import Settings, SettingsError

SECRET = "s" * 32


def test_missing_secret_fails_loudly_naming_the_variable():
    with pytest.raises(SettingsError, match="WWWS_TOKEN_SECRET is required"):
        Settings.from_env("chat", {})


def test_every_problem_is_named_at_once():
    with pytest.raises(SettingsError) as error:
        Settings.from_env(
            "chat", {"WWWS_TOKEN_SECRET": "short", "WWWS_PORT": "eighty", "WWWS_DEV_LOGIN": "?"}
        )
    message = str(error.value)
    assert "32 characters" in message and "WWWS_PORT" in message and "WWWS_DEV_LOGIN" in message


def test_defaults_and_origin_from_public_url():
    settings = Settings.from_env(
        "chat", {"WWWS_TOKEN_SECRET": SECRET, "WWWS_PUBLIC_URL": "https://localhost:8443/"}
    )
    assert settings.allowed_origins == ("https://localhost:8443",)
    assert settings.port == 8000 and settings.internal_port == 9000
    assert settings.backplane_url == "memory://"


def test_token_round_trip_and_refusals():
    assert verify_token(mint_token("alice", SECRET), SECRET).user == "alice"
    for bad in (None, "", "x.y.z", mint_token("alice", "t" * 32)):
        with pytest.raises(AuthError) as error:
            verify_token(bad, SECRET)
        assert error.value.status == 401
    no_exp = jwt.encode({"sub": "alice"}, SECRET, "HS256")
    with pytest.raises(AuthError):
        verify_token(no_exp, SECRET)
    expired = jwt.encode({"sub": "alice", "exp": int(time.time()) - 5}, SECRET, "HS256")
    with pytest.raises(AuthError, match="expired"):
        verify_token(expired, SECRET)
    none_alg = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, "none")
    with pytest.raises(AuthError):
        verify_token(none_alg, SECRET)


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch):
    verifier = TokenVerifier("s" * 32)
    token = mint_token("alice", "s" * 32, ttl_seconds=60)
    assert verifier.verify_now(token).user == "alice"
    checks = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: checks.append(1) or real_decode(*a, **k))
    assert verifier.verify_now(token).user == "alice"
    assert checks == []  # the signature was not checked again
    # a tampered token is another string: checked, and refused
    head, body, signature = token.split(".")
    # (the first character: changing the last ones can leave bits base64 must keep zero,
    # which PyJWT refuses before any signature check, about 1 token in 1000)
    forged = ".".join((head, body, ("A" if signature[0] != "A" else "B") + signature[1:]))
    with pytest.raises(AuthError):
        verifier.verify_now(forged)
    assert checks == [1]
    # once past its exp the remembered token is refused like any expired one
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(AuthError, match="expired"):
        verifier.verify_now(token)


def test_the_token_is_read_from_the_request_target_as_a_query_parameter():
    assert query_token("/chat/ws?token=abc.def-_ghi") == "abc.def-_ghi"
    assert query_token("/chat/ws?v=1&token=a%2Bb%3D&token=second") == "a+b="
    assert query_token("/chat/ws?token=") == ""
    assert query_token("/chat/ws?tokens=x&xtoken=y") is None
    assert query_token("/chat/ws") is None


def test_origin_allow_list():
    check_origin(None, ("https://localhost",))
    check_origin("https://localhost", ("https://localhost",))
    with pytest.raises(AuthError) as error:
        check_origin("https://localhost.evil", ("https://localhost",))
    assert error.value.status == 403


def test_a_secret_is_read_from_the_file_its_FILE_variable_names(tmp_path):
    secret_file = tmp_path / "token_secret"
    secret_file.write_text(SECRET + "\n")
    settings = Settings.from_env("chat", {"WWWS_TOKEN_SECRET_FILE": str(secret_file)})
    assert settings.token_secret == SECRET


def test_a_secret_file_that_is_missing_or_doubled_is_named():
    with pytest.raises(SettingsError, match="WWWS_TOKEN_SECRET_FILE=/nonexistent: cannot read"):
        Settings.from_env("chat", {"WWWS_TOKEN_SECRET_FILE": "/nonexistent"})
    with pytest.raises(SettingsError, match="WWWS_TOKEN_SECRET or WWWS_TOKEN_SECRET_FILE"):
        Settings.from_env(
            "chat", {"WWWS_TOKEN_SECRET": SECRET, "WWWS_TOKEN_SECRET_FILE": "/nonexistent"}
        )
