"""Settings: one frozen dataclass read from the environment, failing loudly.

Every variable is documented in .env.example.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .heartbeat_policy import HeartbeatPolicy

__all__ = ["EVENT_LOOPS", "EnvReader", "Settings", "SettingsError"]

EVENT_LOOPS = ("uvloop", "asyncio")


class SettingsError(Exception):
    """A required variable is missing or a value is invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    service: str
    token_secret: str
    backplane_url: str = "memory://"
    public_url: str = "https://localhost"
    allowed_origins: tuple[str, ...] = ("https://localhost",)
    host: str = "0.0.0.0"
    port: int = 8000
    internal_port: int = 9000
    node_id: str = "local"
    drain_seconds: float = 3.0
    shutdown_timeout: float = 10.0
    close_timeout: float = 2.0
    #: a fixed ping interval; 0 (the default): adaptive, between the floor and the ceiling
    heartbeat_seconds: float = 0.0
    heartbeat_floor_seconds: float = 10.0
    heartbeat_ceiling_seconds: float = 120.0
    #: connections held / event-loop lag at which the interval reaches the ceiling
    heartbeat_connections_at_ceiling: int = 20_000
    heartbeat_lag_at_ceiling: float = 0.5
    max_frame_bytes: int = 64 * 1024
    outbound_queue_bytes: int = 1024 * 1024
    history_size: int = 1000
    history_ttl_seconds: float = 86400.0
    history_max_age_seconds: float = 0.0
    #: 0 (the default): 2 heartbeat intervals + 10 s (roster.py)
    presence_ttl_seconds: float = 0.0
    #: a replica's liveness mark lasts this long (renewed every third of it): a dead
    #: replica's users leave within 4/3 of it (roster.py)
    replica_liveness_seconds: float = 6.0
    ring_timeout_seconds: float = 30.0
    backplane_grace_seconds: float = 5.0
    dev_login: bool = False
    api_key: str | None = None
    log_level: str = "INFO"
    #: the event loop: "uvloop" (libuv, measured faster: docs/benchmarks.md) or "asyncio"
    event_loop: str = "uvloop"
    #: once listening, move every object alive then out of the cyclic collector's sight
    #: (gc.freeze): later collections walk only what connections create. make bench
    #: against wwws-nofreeze: p99 0.45-1.02x, max 0.42-0.88x over 4 runs (docs/benchmarks.md)
    gc_freeze: bool = True
    #: with gc_freeze, what survives each full collection is frozen too, and at most this
    #: often a full collection walks everything (finds the cycles among frozen objects);
    #: 0: freeze start-up only (services/kit/survivor_freeze.py, docs/benchmarks.md)
    gc_thaw_seconds: float = 60.0
    #: how often the replica reports its state to the admin console (0: never)
    report_seconds: float = 2.0
    #: a connection hears ``{"op":"refresh"}`` this long before its token expires
    token_refresh_seconds: float = 60.0
    #: how long a revocation voids older tokens: at least the longest token lifetime
    revocation_keep_seconds: float = 86400.0
    #: concurrent connections of one user on one replica (0: no limit)
    max_connections_per_user: int = 50
    #: an identity provider's keys for RS256/ES256 tokens (at most one of the two)
    jwks_url: str | None = None
    jwks_file: str | None = None
    jwks_refresh_seconds: float = 300.0
    #: when set, tokens must carry this ``iss`` / ``aud``
    token_issuer: str | None = None
    token_audience: str | None = None

    @property
    def heartbeat_policy(self) -> HeartbeatPolicy:
        if self.heartbeat_seconds > 0:
            return HeartbeatPolicy(floor=self.heartbeat_seconds, ceiling=self.heartbeat_seconds)
        return HeartbeatPolicy(
            floor=self.heartbeat_floor_seconds,
            ceiling=self.heartbeat_ceiling_seconds,
            connections_at_ceiling=self.heartbeat_connections_at_ceiling,
            lag_at_ceiling=self.heartbeat_lag_at_ceiling,
        )

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        reader = EnvReader(env)
        secret = reader.secret("WWWS_TOKEN_SECRET", required=True)
        if len(secret) < 32:
            reader.problems.append("WWWS_TOKEN_SECRET must be at least 32 characters (HS256 key)")
        public_url = reader.text("WWWS_PUBLIC_URL", cls.public_url).rstrip("/")
        origins = tuple(
            o.strip().rstrip("/")
            for o in reader.text("WWWS_ALLOWED_ORIGINS", _origin_of(public_url)).split(",")
            if o.strip()
        )
        settings = cls(
            service=service,
            token_secret=secret,
            backplane_url=reader.secret("WWWS_BACKPLANE_URL", cls.backplane_url),
            public_url=public_url,
            allowed_origins=origins,
            host=reader.text("WWWS_HOST", cls.host),
            port=reader.integer("WWWS_PORT", cls.port),
            internal_port=reader.integer("WWWS_INTERNAL_PORT", cls.internal_port),
            node_id=reader.text("WWWS_NODE_ID", socket.gethostname()),
            drain_seconds=reader.number("WWWS_DRAIN_SECONDS", cls.drain_seconds),
            shutdown_timeout=reader.number("WWWS_SHUTDOWN_TIMEOUT", cls.shutdown_timeout),
            heartbeat_seconds=reader.number("WWWS_HEARTBEAT_SECONDS", cls.heartbeat_seconds),
            heartbeat_floor_seconds=reader.number(
                "WWWS_HEARTBEAT_FLOOR_SECONDS", cls.heartbeat_floor_seconds
            ),
            heartbeat_ceiling_seconds=reader.number(
                "WWWS_HEARTBEAT_CEILING_SECONDS", cls.heartbeat_ceiling_seconds
            ),
            heartbeat_connections_at_ceiling=reader.integer(
                "WWWS_HEARTBEAT_CONNECTIONS_AT_CEILING", cls.heartbeat_connections_at_ceiling
            ),
            heartbeat_lag_at_ceiling=reader.number(
                "WWWS_HEARTBEAT_LAG_AT_CEILING", cls.heartbeat_lag_at_ceiling
            ),
            max_frame_bytes=reader.integer("WWWS_MAX_FRAME_BYTES", cls.max_frame_bytes),
            outbound_queue_bytes=reader.integer(
                "WWWS_OUTBOUND_QUEUE_BYTES", cls.outbound_queue_bytes
            ),
            history_size=reader.integer("WWWS_HISTORY_SIZE", cls.history_size),
            history_ttl_seconds=reader.number("WWWS_HISTORY_TTL_SECONDS", cls.history_ttl_seconds),
            history_max_age_seconds=reader.number(
                "WWWS_HISTORY_MAX_AGE_SECONDS", cls.history_max_age_seconds
            ),
            presence_ttl_seconds=reader.number(
                "WWWS_PRESENCE_TTL_SECONDS", cls.presence_ttl_seconds
            ),
            replica_liveness_seconds=reader.number(
                "WWWS_REPLICA_LIVENESS_SECONDS", cls.replica_liveness_seconds
            ),
            ring_timeout_seconds=reader.number(
                "WWWS_RING_TIMEOUT_SECONDS", cls.ring_timeout_seconds
            ),
            backplane_grace_seconds=reader.number(
                "WWWS_BACKPLANE_GRACE_SECONDS", cls.backplane_grace_seconds
            ),
            dev_login=reader.flag("WWWS_DEV_LOGIN", cls.dev_login),
            api_key=reader.secret("WWWS_API_KEY", "") or None,
            log_level=reader.text("WWWS_LOG_LEVEL", cls.log_level).upper(),
            event_loop=reader.text("WWWS_LOOP", cls.event_loop).lower(),
            gc_freeze=reader.flag("WWWS_GC_FREEZE", cls.gc_freeze),
            gc_thaw_seconds=reader.number("WWWS_GC_THAW_SECONDS", cls.gc_thaw_seconds),
            report_seconds=reader.number("WWWS_REPORT_SECONDS", cls.report_seconds),
            token_refresh_seconds=reader.number(
                "WWWS_TOKEN_REFRESH_SECONDS", cls.token_refresh_seconds
            ),
            revocation_keep_seconds=reader.number(
                "WWWS_REVOCATION_KEEP_SECONDS", cls.revocation_keep_seconds
            ),
            max_connections_per_user=reader.integer(
                "WWWS_MAX_CONNECTIONS_PER_USER", cls.max_connections_per_user
            ),
            jwks_url=reader.text("WWWS_JWKS_URL") or None,
            jwks_file=reader.text("WWWS_JWKS_FILE") or None,
            jwks_refresh_seconds=reader.number(
                "WWWS_JWKS_REFRESH_SECONDS", cls.jwks_refresh_seconds
            ),
            token_issuer=reader.text("WWWS_TOKEN_ISSUER") or None,
            token_audience=reader.text("WWWS_TOKEN_AUDIENCE") or None,
        )
        if settings.replica_liveness_seconds < 0.3:
            reader.problems.append("WWWS_REPLICA_LIVENESS_SECONDS must be at least 0.3")
        if settings.heartbeat_floor_seconds < 1:
            reader.problems.append("WWWS_HEARTBEAT_FLOOR_SECONDS must be at least 1")
        if settings.heartbeat_ceiling_seconds < settings.heartbeat_floor_seconds:
            reader.problems.append(
                "WWWS_HEARTBEAT_CEILING_SECONDS must not be below WWWS_HEARTBEAT_FLOOR_SECONDS"
            )
        if settings.event_loop not in EVENT_LOOPS:
            reader.problems.append(f"WWWS_LOOP must be one of {', '.join(EVENT_LOOPS)}")
        if settings.jwks_url and settings.jwks_file:
            reader.problems.append("set WWWS_JWKS_URL or WWWS_JWKS_FILE, not both")
        if settings.jwks_url and urlsplit(settings.jwks_url).scheme not in ("http", "https"):
            reader.problems.append("WWWS_JWKS_URL must be an http(s) URL")
        if reader.problems:
            raise SettingsError("invalid settings: " + "; ".join(reader.problems))
        return settings


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class EnvReader:
    """Reads typed values, collecting every problem so one error names them all."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str = "", required: bool = False) -> str:
        value = self.env.get(name, "").strip()
        if not value and required:
            self.problems.append(f"{name} is required (see .env.example)")
        return value or default

    def secret(self, name: str, default: str = "", required: bool = False) -> str:
        """NAME, or the content of the file NAME_FILE names (Docker/Swarm secrets).

        Setting both is refused: which one wins would be a guess.
        """
        path = self.env.get(f"{name}_FILE", "").strip()
        if not path:
            return self.text(name, default, required)
        if self.env.get(name, "").strip():
            self.problems.append(f"set {name} or {name}_FILE, not both")
            return default
        try:
            with open(path, encoding="utf-8") as secret_file:
                value = secret_file.read().strip()
        except OSError as exc:
            self.problems.append(f"{name}_FILE={path}: cannot read it ({exc.strerror})")
            return default
        if not value and required:
            self.problems.append(f"{name}_FILE={path} is empty")
        return value or default

    def integer(self, name: str, default: int) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be an integer, got {raw!r}")
            return default
        if value < 0:
            self.problems.append(f"{name} must not be negative")
        return value

    def number(self, name: str, default: float) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number, got {raw!r}")
            return default
        if value < 0:
            self.problems.append(f"{name} must not be negative")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name} must be 1/0/true/false, got {raw!r}")
        return default
