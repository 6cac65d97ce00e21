"""The Ray cluster tests: one local Ray instance for the session, started by the tests.

They are marked ``ray`` and left out of the default run (``addopts`` in pyproject);
``./dev test-ray`` installs the ``ray`` extra and runs them.  Without Ray
installed they are not collected at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

try:
    import ray

    if not hasattr(ray, "init"):  # this very folder, seen as a namespace package from tests/
        raise ImportError("no ray")
except ImportError:  # the default environment: nothing here to run
    collect_ignore_glob = ["test_*.py"]

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A local Ray instance (2 CPUs: replicas take 0.5 each, so four fit)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
