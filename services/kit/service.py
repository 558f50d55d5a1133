"""What a service plugs into the kit: its channel rules, extra ops, hooks and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from .protocol import ClientFrame, ErrorCode, ProtocolError

if TYPE_CHECKING:
    from .backplane import Backplane
    from .connection import Connection
    from .hub import ChannelHub
    from .metrics import Metrics
    from .replica import ReplicaState
    from .settings import Settings

__all__ = ["ChannelPolicy", "OpHandler", "ServiceContext", "ServiceSpec"]

T = TypeVar("T")


class ChannelPolicy:
    """Who may subscribe and publish where. The default allows everything."""

    #: largest serialised ``data`` of one publication
    max_data_bytes = 16 * 1024
    #: ``pub`` frames per second per connection and the burst allowed; None: only the
    #: connection-wide frame limit applies
    publish_rate: tuple[float, int] | None = None

    def window(self, channel: str) -> int:
        """Publications in a ``subscribed`` reply that did not recover from ``since``."""
        return 50

    def authorize_subscribe(self, conn: Connection, channel: str, frame: ClientFrame) -> None:
        return None

    def prepare_publish(
        self, conn: Connection, channel: str, data: dict[str, Any], frame: ClientFrame
    ) -> dict[str, Any]:
        return data

    @staticmethod
    def refuse(frame: ClientFrame, code: ErrorCode, message: str) -> ProtocolError:
        return ProtocolError(code, message, frame.id)


OpHandler = Callable[["ServiceContext", "Connection", ClientFrame], Awaitable[None]]
ConnectionHook = Callable[["ServiceContext", "Connection"], Awaitable[None]]
ChannelHook = Callable[["ServiceContext", "Connection", str], Awaitable[None]]
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    policy: ChannelPolicy = field(default_factory=ChannelPolicy)
    ops: Mapping[str, OpHandler] = field(default_factory=dict)
    on_connect: ConnectionHook | None = None
    on_disconnect: ConnectionHook | None = None
    #: after a subscription is made / before it is removed (chat membership)
    on_subscribe: ChannelHook | None = None
    on_unsubscribe: ChannelHook | None = None
    #: adds routes (APIs) and cleanup contexts (background tasks) to the app
    setup: Callable[[web.Application, ServiceContext], None] | None = None
    #: folder with the service's web page (index.html)
    static_dir: Path | None = None
    #: serve the landing page at ``/`` too
    serves_landing: bool = False


@dataclass
class ServiceContext:
    """Everything a handler may use; one per app (replica)."""

    settings: Settings
    spec: ServiceSpec
    backplane: Backplane
    hub: ChannelHub
    metrics: Metrics
    replica: ReplicaState
    extras: dict[str, Any] = field(default_factory=dict)

    def extra(self, key: str, kind: type[T]) -> T:
        """A service's own per-replica object (set up in ``spec.setup``), typed."""
        found = self.extras[key]
        if not isinstance(found, kind):
            raise TypeError(f"extras[{key!r}] is {type(found).__name__}, not {kind.__name__}")
        return found
