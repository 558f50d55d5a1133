#!/usr/bin/env bash
# Create .env from .env.example (random WWWS_TOKEN_SECRET and WWWS_TICKER_API_KEY) if it is
# missing, then refresh the block at its end that this script manages: DOCKER_GID and the
# image names chosen by deploy/offline-images.sh. With them in .env, plain `docker compose`
# commands (e.g. `docker compose up -d --scale chat=3`) see the same settings as `make up`.
# Everything above the managed block is left as it is; the shell environment still wins.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENV_FILE=.env
IMAGES_ENV=deploy/build/images.env
BEGIN="# >>> managed by deploy/dotenv.sh (make env / make up): do not edit below"
END="# <<< end of managed block"

if [ ! -f "$ENV_FILE" ]; then
    secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
    key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
    (umask 077 && sed -e "s|^WWWS_TOKEN_SECRET=.*|WWWS_TOKEN_SECRET=$secret|" \
        -e "s|^WWWS_TICKER_API_KEY=.*|WWWS_TICKER_API_KEY=$key|" .env.example >"$ENV_FILE")
    echo "[env] created .env with a random WWWS_TOKEN_SECRET and WWWS_TICKER_API_KEY"
fi

block=$(
    echo "$BEGIN"
    gid=$(stat -c %g /var/run/docker.sock 2>/dev/null || true)
    [ -z "$gid" ] || echo "DOCKER_GID=$gid"
    if [ -f "$IMAGES_ENV" ]; then
        grep -E '^WWWS_[A-Z_]+=' "$IMAGES_ENV" | grep -v '^WWWS_IMAGES_MODE='
    fi
    echo "$END"
)
tmp=$(mktemp "$ENV_FILE.XXXXXX")
chmod 600 "$tmp"
# Drop the old block (if any), then append the new one.
awk -v b="$BEGIN" -v e="$END" '$0 == b {skip = 1; next} $0 == e {skip = 0; next} !skip' "$ENV_FILE" >"$tmp"
printf '%s\n' "$block" >>"$tmp"
if cmp -s "$tmp" "$ENV_FILE"; then
    rm -f "$tmp"
    echo "[env] .env up to date"
else
    mv "$tmp" "$ENV_FILE"
    echo "[env] .env: refreshed DOCKER_GID and image names"
fi
