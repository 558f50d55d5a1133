"""A TCP forwarder on 127.0.0.1 in front of a real server, that can cut every connection
and refuse new ones (a network partition between a replica and its Redis, in-process), or
freeze them: nothing passes either way, not even a close, as when a machine vanishes."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class Partition:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._path = parts.path
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.cut_off = False
        self.frozen = False
        # connections that sent a SUBSCRIBE (pub/sub ones), and those of them frozen
        self._subscribers: set[asyncio.StreamWriter] = set()
        self._frozen_links: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Partition:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self._path}"

    def cut(self) -> None:
        """Drop every open connection; new ones are closed as soon as they arrive."""
        self.cut_off = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.cut_off = False

    def freeze(self) -> None:
        """Forward nothing from now on, and hold every connection open: the peers see
        silence, never a close or a reset."""
        self.frozen = True

    def thaw(self) -> None:
        self.frozen = False

    def freeze_subscribers(self) -> int:
        """Freeze only the pub/sub connections open now (those that sent a SUBSCRIBE):
        commands still pass, publications stop reaching the subscribers, and nothing
        closes. New connections pass. Returns how many were frozen."""
        self._frozen_links |= self._subscribers
        return len(self._subscribers)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, writer)
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: asyncio.StreamWriter,  # the client side's writer names the connection
    ) -> None:
        upstream = writer is not link
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if upstream and b"SUBSCRIBE" in data.upper():
                    self._subscribers.add(link)
                if not self.frozen and link not in self._frozen_links:
                    writer.write(data)
                    await writer.drain()
        if self.frozen or link in self._frozen_links:
            return  # a vanished machine sends no FIN: cut() ends it at the test's end
        writer.transport.abort()
        self._writers.discard(writer)
