#!/usr/bin/env bash
# promtool check rules + promtool test rules on deploy/prometheus/rules.yml.
# promtool comes from the host (Debian's `prometheus` package) or, when the host has none,
# from the stack's Prometheus image (both the public and the offline one ship it).
set -euo pipefail
cd "$(dirname "$0")/prometheus"
run() { echo "[rules] promtool $*"; }
if command -v promtool >/dev/null 2>&1; then
  run "(host)"; promtool check rules rules.yml && promtool test rules rules_test.yml
  exit
fi
image="${WWWS_PROMETHEUS_IMAGE:-}"
if [ -z "$image" ] && [ -f ../build/images.env ]; then
  image="$(sed -n 's/^WWWS_PROMETHEUS_IMAGE=//p' ../build/images.env)"
fi
image="${image:-prom/prometheus:v2.53.2}"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "[rules] no promtool: install Debian's prometheus package, or run 'make images' first" >&2
  exit 2
fi
run "(image $image)"
docker run --rm --network none -v "$PWD:/rules:ro" --entrypoint sh "$image" \
  -c 'cd /rules && promtool check rules rules.yml && promtool test rules rules_test.yml'
