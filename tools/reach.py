"""How the command-line tools reach a running stack: its address, its secrets (from the
environment or ./.env, as `make up` wrote them), TLS checked against the project's CA, and
errors that say what to do instead of a traceback."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from clients.wwws import Stopped

__all__ = ["DEFAULT_CA", "StackAccess", "StackUnreachable", "explain", "read_env_file"]

DEFAULT_CA = Path("deploy/certs/ca.crt")


class StackUnreachable(Exception):
    """The stack cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class StackAccess:
    base: str  # https://host[:port]
    ca: Path | None
    env: dict[str, str]

    @classmethod
    def from_args(cls, base: str | None, ca: Path | None, env_file: Path) -> StackAccess:
        env = dict(read_env_file(env_file))
        env.update({k: v for k, v in os.environ.items() if k.startswith(("WWWS_", "HTTPS_"))})
        if base is None:
            port = env.get("HTTPS_PORT", "443")
            default = "https://localhost" + ("" if port in ("", "443") else f":{port}")
            base = env.get("WWWS_PUBLIC_URL") or default
        if ca is None and DEFAULT_CA.exists():
            ca = DEFAULT_CA
        return cls(base.rstrip("/"), ca, env)

    def secret(self, name: str) -> str:
        value = self.env.get(name, "")
        if not value:
            raise StackUnreachable(f"{name} is not set and not in .env (run `make up` first)")
        return value

    def ws_url(self, service: str) -> str:
        return self.base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + (
            f"/{service}/ws"
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.base.startswith("https://"):
            return None
        if self.ca is not None:
            return ssl.create_default_context(cafile=str(self.ca))
        return ssl.create_default_context()

    def session(self) -> aiohttp.ClientSession:
        context = self.ssl_context()
        connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15))


def explain(error: BaseException, access: StackAccess) -> str:
    """One line for an error reaching the stack."""
    if isinstance(error, StackUnreachable):
        return str(error)
    if isinstance(error, aiohttp.ClientConnectorCertificateError | ssl.SSLError):
        return (
            f"TLS verification of {access.base} failed ({error}); the stack's certificate is "
            f"signed by deploy/certs/ca.crt: pass --ca PATH to the CA that signed it"
        )
    if isinstance(error, Stopped):
        return f"{access.base}: {error}"
    if isinstance(error, aiohttp.WSServerHandshakeError):
        return f"{access.base} refused the connection: HTTP {error.status} {error.message}"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{access.base} answered HTTP {error.status}: {error.message}"
    if isinstance(error, aiohttp.ClientConnectorError | ConnectionError | TimeoutError):
        return f"cannot reach {access.base}: is the stack up? (`make up`; `make ps` shows it)"
    return f"{type(error).__name__}: {error}"


def read_env_file(path: Path) -> list[tuple[str, str]]:
    """``NAME=value`` pairs of a .env file (comments and blank lines left out)."""
    if not path.exists():
        return []
    pairs = []
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.lstrip().startswith("#"):
            pairs.append((name.strip(), value.strip().strip('"')))
    return pairs
