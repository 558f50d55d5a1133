"""``wwws``: the kit's host tools in one command.

    wwws token alice                 a connection token (WWWS_TOKEN_SECRET from .env)
    wwws chat alice lobby            chat in a room from the terminal
    wwws tail AAPL                   ticker prices as they come (JSON lines)
    wwws tail user:alice --user alice    alice's notifications
    wwws notify alice '{"text": "order filled"}'   the ticker publish API
    wwws call bob --as alice         ring bob, print the call's events
    wwws top                         the admin console's view in the terminal
    wwws revoke mallory              disconnect a user everywhere (4011), void their tokens
    wwws ca                          the local CA and the server certificate (make certs)

The stack is https://localhost (WWWS_PUBLIC_URL or HTTPS_PORT from .env), TLS checked
against deploy/certs/ca.crt; --base and --ca change that. Exit codes: 0 done, 1 the call
or request did not succeed, 2 the stack cannot be used (the message says why).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from clients.wwws import Stopped

from . import chat as chat_tool
from . import commands, localca
from . import token as token_tool
from .reach import StackAccess, StackUnreachable, explain

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wwws", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", help="the stack's https URL (default: from .env)")
    parser.add_argument("--ca", type=Path, help="CA certificate to verify TLS with")
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = sub.add_parser("token", help="mint a connection token")
    token.add_argument("user")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")

    chat = sub.add_parser("chat", help="chat in a room from the terminal")
    chat.add_argument("user")
    chat.add_argument("room", nargs="?", default="lobby")

    tail = sub.add_parser("tail", help="print a ticker channel's publications as they come")
    tail.add_argument("channel", help="a symbol (AAPL) or user:<id> (with --user <id>)")
    tail.add_argument("--user", default="wwws-cli", help="who connects (default wwws-cli)")
    tail.add_argument("--count", type=int, help="stop after this many")
    tail.add_argument("--seconds", type=float, help="stop after this long")

    notify = sub.add_parser("notify", help="send a notification (ticker publish API)")
    notify.add_argument("user")
    notify.add_argument("data", help='a JSON object, e.g. \'{"text": "order filled"}\'')

    call = sub.add_parser("call", help="ring a user and print the call's events")
    call.add_argument("callee")
    call.add_argument("--as", dest="caller", default="wwws-cli", help="who calls")
    call.add_argument("--ring-for", type=float, default=30.0, help="give up after (s)")

    top = sub.add_parser("top", help="the admin console's view in the terminal")
    top.add_argument("--once", action="store_true", help="print one view and exit")
    top.add_argument("--json", action="store_true", help="the console frames as JSON lines")

    revoke = sub.add_parser("revoke", help="disconnect a user everywhere, void their tokens")
    revoke.add_argument("user")

    ca = sub.add_parser("ca", help="create the local CA and server certificate")
    ca.add_argument("--dir", type=Path, default=localca.DEFAULT_DIR, help="output directory")
    ca.add_argument("--force", action="store_true", help="re-issue the server certificate")
    ca.add_argument("--quiet", action="store_true", help="do not print trust instructions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        return token_tool.main(
            [args.user, "--ttl", str(args.ttl), "--env-file", str(args.env_file)]
        )
    if args.command == "ca":
        flags = [flag for flag, on in (("--force", args.force), ("--quiet", args.quiet)) if on]
        return localca.main(["--dir", str(args.dir), *flags])
    access = StackAccess.from_args(args.base, args.ca, args.env_file)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_run(args, access))
        return 130
    except (StackUnreachable, Stopped, aiohttp.ClientError, OSError, TimeoutError) as error:
        print(f"wwws {args.command}: {explain(error, access)}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, access: StackAccess) -> int:
    if args.command == "chat":
        ca = access.ca if access.base.startswith("https://") else None
        secret = access.secret("WWWS_TOKEN_SECRET")
        await chat_tool.chat(access.ws_url("chat"), args.user, args.room, ca, secret)
        return 0
    if args.command == "tail":
        return await commands.run_for(
            commands.tail(access, args.channel, args.user, args.count), args.seconds
        )
    if args.command == "notify":
        data: Any = _json_object(args.data)
        return await commands.notify(access, args.user, data)
    if args.command == "call":
        return await commands.call(access, args.callee, args.caller, args.ring_for)
    if args.command == "top":
        return await commands.top(access, args.once, args.json)
    if args.command == "revoke":
        return await commands.revoke(access, args.user)
    raise AssertionError(args.command)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise StackUnreachable(f"data is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise StackUnreachable('data must be a JSON object, e.g. \'{"text": "hi"}\'')
    return value


if __name__ == "__main__":
    raise SystemExit(main())
