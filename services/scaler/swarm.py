"""The Swarm side of the scaler (Docker SDK): the stack's scalable services and their
replica counts, and setting a count. Scaling down stops tasks the Swarm way (SIGTERM, the
replica drains: readiness 503, then close 1001, clients reconnect to the others)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import docker

__all__ = ["ScalableService", "SwarmServices"]

STACK_LABEL = "com.docker.stack.namespace"
MIN_LABEL = "wwws.scale.min"
MAX_LABEL = "wwws.scale.max"


@dataclass(frozen=True, slots=True)
class ScalableService:
    name: str
    #: the name inside the stack (= Prometheus' job label)
    job: str
    replicas: int
    minimum: int
    maximum: int


class SwarmServices:
    def __init__(self, stack: str, client: Any | None = None) -> None:
        self.stack = stack
        self.client = client if client is not None else docker.from_env(timeout=10)

    def scalable(self) -> list[ScalableService]:
        found = []
        for service in self.client.services.list(filters={"label": f"{STACK_LABEL}={self.stack}"}):
            labels = service.attrs["Spec"].get("Labels") or {}
            mode = service.attrs["Spec"].get("Mode", {})
            if MIN_LABEL not in labels or "Replicated" not in mode:
                continue
            found.append(
                ScalableService(
                    name=service.name,
                    job=service.name.removeprefix(f"{self.stack}_"),
                    replicas=int(mode["Replicated"].get("Replicas", 0)),
                    minimum=int(labels[MIN_LABEL]),
                    maximum=int(labels.get(MAX_LABEL, labels[MIN_LABEL])),
                )
            )
        return found

    def scale(self, name: str, replicas: int) -> None:
        self.client.services.get(name).scale(replicas)
