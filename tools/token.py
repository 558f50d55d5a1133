"""Mint a connection token: ``python -m tools.token alice [--ttl 3600]``.

Reads WWWS_TOKEN_SECRET from the environment or, failing that, from ./.env (what
``make up`` wrote), and prints a JWT to use as the ``token`` query parameter.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from services.kit.auth import mint_token

from .reach import read_env_file

__all__ = ["main"]


def secret_from(env_file: Path) -> str | None:
    """WWWS_TOKEN_SECRET from the environment, else from ``env_file``."""
    if os.environ.get("WWWS_TOKEN_SECRET"):
        return os.environ["WWWS_TOKEN_SECRET"]
    return dict(read_env_file(env_file)).get("WWWS_TOKEN_SECRET") or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.token", description=__doc__)
    parser.add_argument("user", help="user id (the token's sub claim)")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)
    secret = secret_from(args.env_file)
    if not secret:
        print("WWWS_TOKEN_SECRET is not set and not in .env (run make up first)", file=sys.stderr)
        return 2
    try:
        print(mint_token(args.user, secret, args.ttl))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
