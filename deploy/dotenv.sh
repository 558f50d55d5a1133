#!/usr/bin/env bash
# Create .env from .env.example if it is missing, fill in every secret it generates that is
# missing or empty (random WWWS_TOKEN_SECRET, WWWS_TICKER_API_KEY, WWWS_ADMIN_API_KEY,
# WWWS_REDIS_PASSWORD), then
# refresh the block at its end that this script manages: DOCKER_GID and the
# image names chosen by deploy/offline-images.sh. With them in .env, plain `docker compose`
# commands (e.g. `docker compose up -d --scale chat=3`) see the same settings as `make up`.
# Everything above the managed block is left as it is; the shell environment still wins.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENV_FILE=.env
IMAGES_ENV=deploy/build/images.env
BEGIN="# >>> managed by deploy/dotenv.sh (make env / make up): do not edit below"
END="# <<< end of managed block"

# Secrets this script generates: in a new .env, and in an existing one where the
# variable is missing or empty (a kit update that adds a secret needs no manual step).
GENERATED_SECRETS="WWWS_TOKEN_SECRET WWWS_TICKER_API_KEY WWWS_ADMIN_API_KEY WWWS_REDIS_PASSWORD"

if [ ! -f "$ENV_FILE" ]; then
    (umask 077 && cp .env.example "$ENV_FILE")
    echo "[env] created .env from .env.example"
fi
for name in $GENERATED_SECRETS; do
    if grep -qE "^[[:space:]]*$name=[^[:space:]]" "$ENV_FILE"; then
        continue
    fi
    value=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
    tmp=$(mktemp "$ENV_FILE.XXXXXX")
    chmod 600 "$tmp"
    if grep -qE "^[[:space:]]*$name=" "$ENV_FILE"; then
        sed -e "s|^[[:space:]]*$name=.*|$name=$value|" "$ENV_FILE" >"$tmp"
    else
        { cat "$ENV_FILE"; echo "$name=$value"; } >"$tmp"
    fi
    mv "$tmp" "$ENV_FILE"
    echo "[env] .env: generated a random $name"
done

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
