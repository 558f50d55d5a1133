"""What ``wwws`` does against a running stack, one coroutine per subcommand: each prints
lines for a person (or ``--json`` lines for a script) and returns an exit code."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from clients.wwws import Client
from services.kit.auth import mint_token

from .reach import StackAccess, StackUnreachable

__all__ = ["call", "notify", "revoke", "tail", "top"]

CALL_ENDS = {"answered", "rejected", "missed", "ended", "offline", "busy"}


def _client(access: StackAccess, service: str, user: str) -> Client:
    token = mint_token(user, access.secret("WWWS_TOKEN_SECRET"))
    return Client(access.ws_url(service), token, ssl_context=access.ssl_context())


async def tail(access: StackAccess, channel: str, user: str, count: int | None) -> int:
    """Print a ticker channel's publications as they come (``user:<id>`` needs --user)."""
    async with _client(access, "ticker", user) as client:
        await client.subscribe(channel)
        print(f"* {channel} on replica {client.node}; Ctrl-C to stop", file=sys.stderr)
        seen = 0
        while count is None or seen < count:
            ch, offset, data = await client.next_message(within=3600)
            print(json.dumps({"ch": ch, "offset": offset, "data": data}), flush=True)
            seen += 1
    return 0


async def notify(access: StackAccess, user: str, data: dict[str, Any]) -> int:
    """A notification to ``user`` through the ticker's publish API."""
    body = {"user": user, "data": data}
    print(json.dumps(await _post(access, "/ticker/api/publish", body, "WWWS_TICKER_API_KEY")))
    return 0


async def _post(access: StackAccess, path: str, body: dict[str, Any], key_name: str) -> Any:
    """POST ``body`` with the bearer key ``key_name`` (from .env); the JSON answer, or
    StackUnreachable saying what the stack refused."""
    key = access.secret(key_name)
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        access.session() as session,
        session.post(f"{access.base}{path}", json=body, headers=headers) as response,
    ):
        if response.status != 200:
            text = (await response.text()).strip()
            raise StackUnreachable(f"{path} refused: HTTP {response.status}: {text}")
        return await response.json()


async def call(access: StackAccess, callee: str, user: str, ring_for: float) -> int:
    """Ring ``callee`` as ``user`` and print the call's events until it ends."""
    async with _client(access, "telephony", user) as client:
        reply = await client.request({"op": "call", "to": callee})
        print(json.dumps(reply), flush=True)
        if reply["op"] != "ringing":
            return 1  # offline or busy: said above
        call_id = reply["call_id"]
        try:
            while True:
                event = await client.next_event(within=ring_for)
                print(json.dumps(event), flush=True)
                if event.get("op") in CALL_ENDS and event.get("call_id") == call_id:
                    return 0 if event["op"] == "answered" else 1
        except TimeoutError:
            await client.send({"op": "hangup", "call_id": call_id})
            print(json.dumps({"op": "gave_up", "after": ring_for}))
            return 1


async def _admin_token(access: StackAccess, session: Any) -> str:
    key = access.secret("WWWS_ADMIN_API_KEY")
    async with session.post(f"{access.base}/admin/api/login", json={"key": key}) as response:
        if response.status != 200:
            raise StackUnreachable(f"admin login refused: HTTP {response.status}: "
                                   f"{(await response.text()).strip()}")  # fmt: skip
        return str((await response.json())["token"])


async def top(access: StackAccess, once: bool, as_json: bool) -> int:
    """The admin console's view, in the terminal: every replica, the busiest channels."""
    async with access.session() as session:
        token = await _admin_token(access, session)
        async with Client(
            access.ws_url("admin"), token, ssl_context=access.ssl_context()
        ) as client:
            while True:
                frame = await client.next_event(within=30)
                if frame.get("op") != "console":
                    continue
                if as_json:
                    print(json.dumps(frame), flush=True)
                else:
                    print(render(frame), flush=True)
                if once:
                    return 0


def render(frame: dict[str, Any]) -> str:
    lines = ["\x1b[2J\x1b[H" if sys.stdout.isatty() else ""]
    lines.append(f"{'service':<10} {'node':<14} {'conns':>6} {'subs':>6} {'in/s':>8} "
                 f"{'out/s':>8} {'lag ms':>7} {'MiB':>5}  state")  # fmt: skip
    for r in sorted(frame["replicas"], key=lambda r: (r["service"], r["node"])):
        state = "silent" if r["silent"] else ("draining" if r["draining"] else "serving")
        lines.append(
            f"{r['service']:<10} {r['node'][:14]:<14} {r['connections']:>6.0f} "
            f"{r['subscriptions']:>6.0f} {r['in_per_second']:>8.1f} {r['out_per_second']:>8.1f} "
            f"{r['loop_lag_ms']:>7.1f} {r['memory_bytes'] / 1048576:>5.0f}  {state}"
        )
    if frame["channels"]:
        lines.append("")
        lines.append("busiest channels: " + ", ".join(
            f"{c['service']}/{c['ch']} ({c['subscribers']})" for c in frame["channels"]
        ))  # fmt: skip
    return "\n".join(lines)


async def revoke(access: StackAccess, user: str) -> int:
    """Close every connection of ``user`` (4011) and void their tokens."""
    body = {"user": user}
    print(json.dumps(await _post(access, "/admin/api/revoke", body, "WWWS_ADMIN_API_KEY")))
    return 0


async def run_for(coroutine: Any, seconds: float | None) -> int:
    """``coroutine``, stopped after ``seconds`` (exit 0) when given."""
    if seconds is None:
        return int(await coroutine)
    try:
        return int(await asyncio.wait_for(coroutine, seconds))
    except TimeoutError:
        return 0
