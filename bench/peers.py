"""Install the peer servers the bench compares against, from PyPI and npm, into
bench/.peers/ (gitignored). Nothing of theirs is committed: only the pins below and the
tiny glue apps in bench/apps/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["NODE_DIR", "NODE_PEERS", "PEERS_DIR", "PY_PEERS", "ensure_node", "ensure_python"]

BENCH = Path(__file__).resolve().parent
PEERS_DIR = BENCH / ".peers"
PY_VENV = PEERS_DIR / "venv"
NODE_DIR = PEERS_DIR / "node"

# Pinned so a run is reproducible; bump deliberately and say so in docs/benchmarks.md.
PY_PEERS = (
    "python-socketio==5.18.1",
    "python-engineio==4.15.1",
    "aiohttp==3.14.5",
    "redis==8.1.0",
    "channels==4.3.2",
    "channels-redis==4.3.0",
    "django>=5.2,<6",  # Django 6 needs Python 3.12
    "uvicorn==0.54.0",
    "websockets==17.4",
)
NODE_PEERS = {
    "socket.io": "4.8.4",
    "@socket.io/redis-streams-adapter": "0.3.1",
    "redis": "4.7.1",
}


def _stamp_ok(stamp: Path, wanted: str) -> bool:
    return stamp.exists() and stamp.read_text() == wanted


def ensure_python(log: Path) -> Path:
    """A venv with the Python peers; returns its python. Idempotent (a stamp file)."""
    wanted = "\n".join(PY_PEERS)
    stamp = PY_VENV / ".bench-stamp"
    python = PY_VENV / "bin" / "python"
    if _stamp_ok(stamp, wanted) and python.exists():
        return python
    uv = shutil.which("uv")
    with log.open("a") as out:
        if uv:
            subprocess.run(
                [uv, "venv", "--quiet", "--python", sys.executable, str(PY_VENV)],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
            )
            cmd = [uv, "pip", "install", "--python", str(python), *PY_PEERS]
        else:
            subprocess.run([sys.executable, "-m", "venv", str(PY_VENV)], check=True, timeout=300)
            cmd = [str(python), "-m", "pip", "install", "--quiet", *PY_PEERS]
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    stamp.write_text(wanted)
    return python


def ensure_node(log: Path) -> Path:
    """node_modules with Socket.IO 4.8 and the Redis streams adapter; returns the dir."""
    wanted = json.dumps(NODE_PEERS, sort_keys=True)
    stamp = NODE_DIR / ".bench-stamp"
    if _stamp_ok(stamp, wanted) and (NODE_DIR / "node_modules" / "socket.io").exists():
        return NODE_DIR
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are needed for the Socket.IO peer")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    package = {"name": "wwws-bench-peers", "private": True, "dependencies": NODE_PEERS}
    (NODE_DIR / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    with log.open("a") as out:
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=NODE_DIR,
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    stamp.write_text(wanted)
    return NODE_DIR
