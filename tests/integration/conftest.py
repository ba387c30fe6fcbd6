"""The integration tier: real sshd and dockerd per simulated host (tests/testbed/testbed.sh).

Every test here is marked ``integration``. The session fixture ``testbed`` loads the
testbed's state; without a running testbed the tier is skipped, except under CI=true,
where it must run and a missing testbed fails the session.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_TESTBED_DIR = Path(__file__).resolve().parents[1] / "testbed"
if str(_TESTBED_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTBED_DIR))

from testbed import Testbed, TestbedNotUp  # noqa: E402

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    try:
        tb = Testbed.load()
    except TestbedNotUp as e:
        why = f"testbed not up: run tests/testbed/testbed.sh up ({e})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; under CI=true the integration tier must run", pytrace=False)
        pytest.skip(why)
    # What was on the hosts before this session touched them (test_testbed checks a fresh `up`).
    tb.at_session_start = tb.snapshot()
    return tb
