"""What a service plugs into the kit (its channel rules, extra ops, hooks, routes and own
state) and what the kit hands back to every handler (the :class:`ServiceContext`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, cast

from aiohttp import web

from .protocol import ClientFrame, ErrorCode, ProtocolError

if TYPE_CHECKING:
    from .auth import TokenVerifier
    from .backplane import Backplane
    from .connection import Connection
    from .deadlines import Deadlines
    from .heartbeat import Heartbeat
    from .hub import ChannelHub
    from .metrics import Metrics
    from .replica import ReplicaState
    from .settings import Settings

__all__ = [
    "CONTEXT",
    "ChannelHook",
    "ChannelPolicy",
    "ConnectionHook",
    "OpHandler",
    "ServiceContext",
    "ServiceSetup",
    "ServiceSpec",
]

if TYPE_CHECKING:
    # PEP 696 default (mypy only; Python 3.11's TypeVar has none): a bare
    # ``ServiceContext`` in code that does not care about a service's state means
    # ``ServiceContext[Any]``.
    from typing_extensions import TypeVar

    StateT = TypeVar("StateT", default=Any)
else:
    from typing import TypeVar

    StateT = TypeVar("StateT")


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


OpHandler = Callable[["ServiceContext[StateT]", "Connection", ClientFrame], Awaitable[None]]
ConnectionHook = Callable[["ServiceContext[StateT]", "Connection"], Awaitable[None]]
ChannelHook = Callable[["ServiceContext[StateT]", "Connection", str], Awaitable[None]]
#: adds routes (APIs) and cleanup contexts (background tasks) to the app and returns the
#: service's own per-replica state (``ctx.state``)
ServiceSetup = Callable[[web.Application, "ServiceContext[StateT]"], StateT]
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@dataclass(frozen=True)
class ServiceSpec(Generic[StateT]):
    name: str
    policy: ChannelPolicy = field(default_factory=ChannelPolicy)
    ops: Mapping[str, OpHandler[StateT]] = field(default_factory=dict)
    #: runs before the client's ``hello`` is written; a failure closes the connection with
    #: 1013 (backplane unavailable) or 1011 (anything else)
    on_connect: ConnectionHook[StateT] | None = None
    on_disconnect: ConnectionHook[StateT] | None = None
    #: after a subscription is made / before it is removed (chat membership)
    on_subscribe: ChannelHook[StateT] | None = None
    on_unsubscribe: ChannelHook[StateT] | None = None
    setup: ServiceSetup[StateT] | None = None
    #: folder with the service's web page (index.html)
    static_dir: Path | None = None


_NO_STATE: Any = object()


@dataclass(eq=False)
class ServiceContext(Generic[StateT]):
    """Everything a handler may use; one per app (replica)."""

    settings: Settings
    spec: ServiceSpec[StateT]
    backplane: Backplane
    hub: ChannelHub
    metrics: Metrics
    replica: ReplicaState
    verifier: TokenVerifier
    heartbeat: Heartbeat
    #: every op a client may send, by name (session.client_ops: one table per replica)
    ops: dict[str, OpHandler[Any]] = field(default_factory=dict, repr=False)
    #: the connections' token deadlines (token_expiry.py), made on first use
    token_deadlines: tuple[Deadlines[Connection], Deadlines[Connection]] | None = field(
        default=None, repr=False
    )
    _state: Any = field(default=_NO_STATE, repr=False)

    @property
    def state(self) -> StateT:
        """The service's own per-replica object: what ``spec.setup`` returned."""
        if self._state is _NO_STATE:
            raise LookupError(f"{self.spec.name} has no state: ServiceSpec.setup returns it")
        return cast(StateT, self._state)

    def set_state(self, state: StateT) -> None:
        self._state = state


#: the app's :class:`ServiceContext` (``request.app[CONTEXT]``)
CONTEXT = web.AppKey("context", ServiceContext)
