"""``wwws``, the command-line tool, against the real stack (through Traefik, TLS checked
against the project's CA), run as a user runs it: a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from stack import ROOT, Stack

from services.kit.auth import verify_token


async def wwws(stack: Stack, *args: str, timeout: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "--base", stack.base, "--env-file",
        str(stack.env_file), *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_token_is_valid_for_the_stack(stack: Stack):
    code, out, _ = await wwws(stack, "token", "cli-user", "--ttl", "60")
    assert code == 0
    assert verify_token(out.strip(), stack.secret).user == "cli-user"


async def test_notify_reaches_tail(stack: Stack):
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "--base", stack.base, "--env-file",
        str(stack.env_file), "tail", "user:cli-investor", "--user", "cli-investor",
        "--count", "1",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert tail.stderr is not None and tail.stdout is not None
    banner = await asyncio.wait_for(tail.stderr.readline(), 20)  # subscribed
    assert b"user:cli-investor" in banner
    code, out, err = await wwws(stack, "notify", "cli-investor", '{"text": "order filled"}')
    assert code == 0, err
    assert json.loads(out)["channel"] == "user:cli-investor"
    line = await asyncio.wait_for(tail.stdout.readline(), 20)
    assert await asyncio.wait_for(tail.wait(), 20) == 0
    received = json.loads(line)
    assert received["ch"] == "user:cli-investor" and received["data"]["text"] == "order filled"


async def test_top_shows_every_service(stack: Stack):
    code, out, err = await wwws(stack, "top", "--once", "--json")
    assert code == 0, err
    frame = json.loads(out)
    services = {replica["service"] for replica in frame["replicas"]}
    assert {"chat", "ticker", "telephony", "admin"} <= services
    code, out, _ = await wwws(stack, "top", "--once")
    assert code == 0 and "serving" in out and "chat" in out


async def test_call_to_nobody_online_says_offline(stack: Stack):
    code, out, _ = await wwws(stack, "call", "cli-nobody", "--as", "cli-caller")
    assert code == 1
    assert json.loads(out.splitlines()[0])["op"] == "offline"


async def test_revoke(stack: Stack):
    code, out, err = await wwws(stack, "revoke", "cli-banned")
    assert code == 0, err
    assert json.loads(out)["user"] == "cli-banned"


async def test_clear_errors_when_the_stack_cannot_be_used(stack: Stack, tmp_path: Path):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "--base", "https://localhost:1", "--env-file",
        str(stack.env_file), "top", "--once",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode == 2 and b"is the stack up?" in err, err
    # another CA (wwws ca makes one in a folder of its own) does not vouch for the stack
    code, _, _ = await wwws(stack, "ca", "--dir", str(tmp_path), "--quiet")
    assert code == 0 and (tmp_path / "ca.crt").exists()
    code, _, err = await wwws(stack, "--ca", str(tmp_path / "ca.crt"), "revoke", "x")
    assert code == 2 and "TLS verification" in err, err
    # a token the stack does not take (another secret): said at once, not "is it up?"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "--base", stack.base, "--env-file",
        str(stack.env_file), "tail", "cli-room", "--user", "cli-stranger", "--count", "1",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "WWWS_TOKEN_SECRET": "x" * 40},
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 25)
    assert process.returncode == 2 and b"refused the handshake with 401" in err, err


async def test_chat_publishes_what_is_typed(stack: Stack):
    async with stack.session() as session:
        reader, _ = await stack.connect(session, "chat", "cli-reader")
        await reader.send_json({"op": "sub", "id": 1, "ch": "cli-room"})
        while (await reader.receive_json(timeout=10))["op"] != "subscribed":
            pass
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.cli", "--base", stack.base, "--env-file",
            str(stack.env_file), "chat", "cli-talker", "cli-room",
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(b"typed in a terminal\n"), 30)
        assert process.returncode == 0, err.decode()
        assert b"cli-talker in cli-room on replica" in out
        while True:
            frame = await reader.receive_json(timeout=10)
            if frame["op"] == "msg":
                break
        assert frame["data"]["text"] == "typed in a terminal"
        assert frame["data"]["user"] == "cli-talker"
        await reader.close()
