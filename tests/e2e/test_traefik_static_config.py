"""Traefik's static configuration as Traefik itself reads it, for the dev stack and the
production overlay.

compose.yaml gives Traefik its static configuration as a map of TRAEFIK_* variables, and
compose.prod.yaml changes single keys of it. What Traefik makes of the rendered
environment is read from its own debug line ("Static configuration loaded"), so a
misspelt variable (which Traefik ignores silently) shows up as a missing setting here.
No stack: one short-lived Traefik container per file set, nothing published.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any

import pytest
from stack import IMAGES_ENV, ROOT, read_env_file

RENDER_ENV = {
    "WWWS_TOKEN_SECRET": "s" * 32,
    "WWWS_REDIS_PASSWORD": "p" * 24,
    "DOCKER_GID": "999",
    "COMPOSE_PROJECT_NAME": "wwws-config",
    "HTTPS_PORT": "8443",
    "WWWS_DOMAIN": "example.org",
    "WWWS_ACME_EMAIL": "ops@example.org",
    "WWWS_TRAEFIK_LOG_LEVEL": "DEBUG",
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def rendered_traefik(*files: str) -> dict[str, Any]:
    env = {**os.environ, **read_env_file(IMAGES_ENV), **RENDER_ENV}
    command = ["docker", "compose", "--env-file", "/dev/null", "--project-directory", str(ROOT)]
    for name in files:
        command += ["-f", str(ROOT / name)]
    rendered = subprocess.run(
        [*command, "config", "--format", "json"], env=env, capture_output=True, text=True
    )
    assert rendered.returncode == 0, rendered.stderr
    service: dict[str, Any] = json.loads(rendered.stdout)["services"]["traefik"]
    return service


def effective_static_config(service: dict[str, Any]) -> dict[str, Any]:
    """Start Traefik with the service's environment just long enough to log its static
    configuration (debug level), then remove it."""
    env_args = [f"--env={key}={value}" for key, value in service["environment"].items()]
    run = ["docker", "run", "-d", "--entrypoint", "traefik", "--label=wwws.test=traefik-config"]
    started = subprocess.run(
        [*run, *env_args, service["image"]],
        capture_output=True,
        text=True,
        check=True,
    )
    container = started.stdout.strip()
    output = ""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
            output = ANSI.sub("", logs.stdout + logs.stderr)
            for line in output.splitlines():
                if "Static configuration loaded" in line:
                    logged = json.loads(line)["staticConfiguration"]
                    return dict(json.loads(logged) if isinstance(logged, str) else logged)
            time.sleep(0.2)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    raise AssertionError(f"Traefik logged no static configuration:\n{output[-2000:]}")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else key))
        return flat
    return {prefix: tree}


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return rendered_traefik("compose.yaml")


@pytest.fixture(scope="module")
def prod() -> dict[str, Any]:
    return rendered_traefik("compose.yaml", "compose.prod.yaml")


def test_traefik_takes_no_flags(dev: dict[str, Any], prod: dict[str, Any]):
    # Flags would replace the whole environment-based configuration.
    assert not dev.get("command")
    assert not prod.get("command")


def test_dev_static_config_as_traefik_reads_it(dev: dict[str, Any]):
    config = flatten(effective_static_config(dev))
    expected = {
        "entryPoints.web.address": ":80",
        "entryPoints.web.http.redirections.entryPoint.to": ":8443",
        "entryPoints.web.http.redirections.entryPoint.permanent": True,
        "entryPoints.websecure.address": ":443",
        "entryPoints.websecure.asDefault": True,
        "entryPoints.websecure.http.middlewares": ["secure-headers@file"],
        "entryPoints.websecure.http.encodedCharacters.allowEncodedSlash": False,
        "entryPoints.websecure.http.encodedCharacters.allowEncodedHash": False,
        "entryPoints.websecure.http.aliasHeadersStrategy": "delete",
        "entryPoints.websecure.transport.lifeCycle.graceTimeOut": "10s",
        "entryPoints.ping.address": ":8081",
        "entryPoints.metrics.address": ":8082",
        "metrics.prometheus.buckets": [0.025, 0.1, 0.3, 1.2, 5],
        "providers.docker.exposedByDefault": False,
        "providers.docker.network": "wwws-config_default",
        "providers.docker.constraints": "Label(`com.docker.compose.project`,`wwws-config`)",
        "providers.file.directory": "/etc/traefik/dynamic",
        "accessLog.format": "json",
        "accessLog.fields.names.requestpath": "drop",
        "global.sendAnonymousUsage": False,
        "serversTransport.forwardingTimeouts.dialTimeout": "1s",
    }
    # Traefik's log leaves out false values: a missing key reads as false (where the
    # setting were lost, its default, e.g. exposedByDefault=true, would show up instead)
    assert {key: config.get(key, False) for key in expected} == expected
    assert "api" not in {key.split(".")[0] for key in config}, "the API/dashboard is enabled"


def test_prod_overlay_changes_only_tls_redirect_and_hsts(dev: dict[str, Any], prod: dict[str, Any]):
    dev_config = flatten(effective_static_config(dev))
    prod_config = flatten(effective_static_config(prod))
    changed = {
        key: prod_config.get(key)
        for key in dev_config.keys() | prod_config.keys()
        if dev_config.get(key) != prod_config.get(key)
    }
    acme = "certificatesResolvers.le.acme."
    assert changed.pop(acme + "email") == "ops@example.org"
    assert changed.pop(acme + "storage") == "/letsencrypt/acme.json"
    assert changed.pop(acme + "caServer").startswith("https://acme-v02.api.letsencrypt.org/")
    assert changed.pop(acme + "tlsChallenge") == {}
    # defaults Traefik fills in for any resolver
    for key in [key for key in changed if key.startswith(acme)]:
        assert key not in dev_config
        changed.pop(key)
    # dev's `tls: {}` (a leaf here) becomes a subtree with the resolver
    assert changed.pop("entryPoints.websecure.http.tls") is None
    assert changed == {
        "entryPoints.web.http.redirections.entryPoint.to": "websecure",
        "entryPoints.websecure.http.middlewares": ["secure-headers@file", "hsts@file"],
        "entryPoints.websecure.http.tls.certResolver": "le",
    }
