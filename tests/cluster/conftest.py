"""One real 3-node swarm for the tests of a module in tests/cluster (building it is the slow
part; removed when the module is done, so it never idles beside the other suites);
the tests run in file order and the destructive ones (a node killed) come last."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from swarm_cluster import SwarmCluster, running_swarm


@pytest.fixture(scope="module")
def swarm() -> Iterator[SwarmCluster]:
    with running_swarm() as cluster:
        yield cluster
