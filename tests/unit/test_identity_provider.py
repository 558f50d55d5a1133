"""RS256/ES256 tokens verified against a JWKS (keys made here, no network beyond
127.0.0.1), iss/aud, key rotation through the URL, and algorithm confusion refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.kit.auth import AuthError, TokenVerifier
from services.kit.jwks import JwksError, KeySet

SECRET = "s" * 32
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(private: Any, kid: str) -> dict[str, Any]:
    public = jwt.algorithms.get_default_algorithms()[
        "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
    ].to_jwk(private.public_key(), as_dict=True)
    return {**public, "kid": kid, "use": "sig"}


def document(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


def sign(private: Any, alg: str, kid: str | None, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "alice", "iat": now, "exp": now + 60, **claims}
    headers = {"kid": kid} if kid else None
    return jwt.encode(body, private, alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_rs256_and_es256_tokens_verify_against_the_key_set():
    keys = KeySet.from_document(document(jwk(RSA_KEY, "r1"), jwk(EC_KEY, "e1")))
    verifier = TokenVerifier(SECRET, keys)
    assert verifier.verify_now(sign(RSA_KEY, "RS256", "r1")).user == "alice"
    assert verifier.verify_now(sign(EC_KEY, "ES256", "e1")).user == "alice"
    # the shared secret still works beside the provider
    assert verifier.verify_now(jwt.encode({"sub": "bob", "exp": 2**33}, SECRET, "HS256")).user


@pytest.mark.parametrize(
    "make",
    [
        lambda: sign(RSA_KEY, "RS256", "unknown"),  # a key id the set lacks
        lambda: sign(rsa.generate_private_key(65537, 2048), "RS256", "r1"),  # another key
        lambda: sign(EC_KEY, "ES256", "r1"),  # the kid of a key of the other type
        lambda: sign(RSA_KEY, "RS512", "r1"),  # an algorithm not accepted
        lambda: jwt.encode({"sub": "alice", "exp": 2**33}, None, "none"),
    ],
)
def test_tokens_the_key_set_does_not_vouch_for_are_refused(make):
    verifier = TokenVerifier(SECRET, KeySet.from_document(document(jwk(RSA_KEY, "r1"))))
    with pytest.raises(AuthError) as error:
        verifier.verify_now(make())
    assert error.value.status == 401


def test_hs256_signed_with_the_providers_public_key_is_refused():
    """Algorithm confusion: the attacker knows the public key and uses it as an HMAC
    secret. HS256 is only ever checked with the shared secret."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode())
    payload = b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 60}).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64(signature)}"
    keys = KeySet.from_document(document(jwk(RSA_KEY, "r1")))
    for verifier in (TokenVerifier(SECRET, keys), TokenVerifier(None, keys)):
        with pytest.raises(AuthError):
            verifier.verify_now(forged)


def test_issuer_and_audience_are_checked_when_configured():
    keys = KeySet.from_document(document(jwk(RSA_KEY, "r1")))
    verifier = TokenVerifier(None, keys, issuer="https://idp.test", audience="wwws")
    good = sign(RSA_KEY, "RS256", "r1", iss="https://idp.test", aud="wwws")
    assert verifier.verify_now(good).user == "alice"
    for claims in ({"iss": "https://evil.test", "aud": "wwws"}, {"iss": "https://idp.test"}):
        with pytest.raises(AuthError):
            verifier.verify_now(sign(RSA_KEY, "RS256", "r1", **claims))
    with pytest.raises(AuthError, match="HS256 tokens are not accepted"):
        verifier.verify_now(jwt.encode({"sub": "a", "exp": 2**33}, SECRET, "HS256"))


def test_a_bad_key_file_names_the_problem(tmp_path):
    missing = tmp_path / "nothing.json"
    with pytest.raises(JwksError, match="cannot read it"):
        KeySet.from_file(str(missing))
    symmetric = tmp_path / "oct.json"
    symmetric.write_text(json.dumps(document({"kty": "oct", "k": b64(b"x" * 32), "kid": "h"})))
    with pytest.raises(JwksError, match="no RS256 or ES256 signing key"):
        KeySet.from_file(str(symmetric))
    good = tmp_path / "jwks.json"
    good.write_text(json.dumps(document(jwk(EC_KEY, "e1"))))
    verifier = TokenVerifier(None, KeySet.from_file(str(good)))
    assert verifier.verify_now(sign(EC_KEY, "ES256", "e1")).user == "alice"


async def test_a_rotated_key_is_fetched_from_the_url_once_per_interval(aiohttp_server):
    served = {"doc": document(jwk(RSA_KEY, "r1")), "fetches": 0}

    async def certs(_: web.Request) -> web.Response:
        served["fetches"] += 1
        return web.json_response(served["doc"])

    app = web.Application()
    app.router.add_get("/certs", certs)
    server = await aiohttp_server(app, host="127.0.0.1")
    now = [1000.0]
    keys = KeySet(str(server.make_url("/certs")), clock=lambda: now[0])
    await keys.fetch()
    verifier = TokenVerifier(None, keys)
    assert (await verifier.verify(sign(RSA_KEY, "RS256", "r1"))).user == "alice"
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    served["doc"] = document(jwk(new_key, "r2"))
    # within the minimum interval: not fetched again, refused
    with pytest.raises(AuthError):
        await verifier.verify(sign(new_key, "RS256", "r2"))
    assert served["fetches"] == 1
    now[0] += 11
    assert (await verifier.verify(sign(new_key, "RS256", "r2"))).user == "alice"
    assert served["fetches"] == 2
    # made-up key ids do not make it fetch again and again
    for n in range(5):
        with pytest.raises(AuthError):
            await verifier.verify(sign(new_key, "RS256", f"bogus{n}"))
    assert served["fetches"] == 2
