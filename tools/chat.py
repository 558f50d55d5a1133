"""A terminal chat client: ``python -m tools.chat alice lobby``.

Lines you type are published to the room; the room's messages, joins and leaves are
printed as they arrive. It reconnects through Traefik by the close-code policy and resumes
from the last offset it printed, so killing the replica it is on loses nothing: watch the
`node` it reports change. The token is minted with WWWS_TOKEN_SECRET (from the
environment or ./.env, as `make up` wrote it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
from pathlib import Path

from clients.wwws import Client, ClientError, NotAcknowledged, Stopped
from services.kit.auth import mint_token

from .reach import DEFAULT_CA
from .token import secret_from

__all__ = ["main"]


async def chat(url: str, user: str, room: str, ca: Path | None, secret: str) -> None:
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    async with Client(url, mint_token(user, secret), ssl_context=context) as client:
        await client.subscribe(room)
        print(f"* {user} in {room} on replica {client.node}; type to talk, Ctrl-D to leave")
        printer = asyncio.create_task(_print_room(client))
        node = client.node
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            text = line.rstrip("\n")
            if not text:
                continue
            try:
                await client.publish(room, {"text": text})
            except NotAcknowledged:
                print("* not acknowledged (reconnecting): send it again if it does not show")
            except ClientError as error:
                print(f"* refused: {error}")
            except Stopped as error:  # revoked, or the token expired: reconnecting cannot help
                print(f"* {error}")
                break
            if client.node != node:
                node = client.node
                print(f"* now on replica {node} (reconnects: {client.reconnects})")
        printer.cancel()


async def _print_room(client: Client) -> None:
    async def events() -> None:
        with contextlib.suppress(Stopped):  # said by the message loop
            while True:
                event = await client.next_event(within=3600)
                if event.get("op") in ("join", "leave"):
                    print(f"* {event['user']} {'joined' if event['op'] == 'join' else 'left'}")

    watcher = asyncio.create_task(events())
    try:
        async for _, offset, data in client.messages():
            print(f"[{offset}] {data.get('user')}: {data.get('text')}")
        # the client stopped (revoked, or its token expired): reconnecting cannot help
        print(f"* {Stopped(client.stopped_with, client.refused_with)}; Ctrl-D to leave")
    finally:
        watcher.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chat", description=__doc__)
    parser.add_argument("user")
    parser.add_argument("room", nargs="?", default="lobby")
    parser.add_argument("--url", default="wss://localhost/chat/ws")
    parser.add_argument("--ca", type=Path, default=DEFAULT_CA, help="CA to verify TLS with")
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)
    secret = secret_from(args.env_file)
    if not secret:
        print("WWWS_TOKEN_SECRET is not set and not in .env (run make up first)", file=sys.stderr)
        return 2
    ca = args.ca if args.url.startswith("wss://") and args.ca.exists() else None
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(chat(args.url, args.user, args.room, ca, secret))
    except Stopped as error:
        print(f"{args.url}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
