"""Failover: the primary stops (immediate) while MetricsWriters stream, its synchronous
standby is promoted, and the server, configured with both hosts and
target_session_attrs=read-write, goes on against the new primary.

The pair is built by tests/replication.py from the embedded PostgreSQL's binaries, apart
from the suite's session server: this runs the same when PREDICTSTORE_TEST_DATABASE_URL
names an external TimescaleDB server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.replication import Pair, run_failover, start_pair

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def synchronous_pair(tmp_path: Path) -> Iterator[Pair]:
    pair = start_pair(tmp_path, synchronous=True)
    try:
        yield pair
    finally:
        pair.stop()


async def test_failover_to_a_synchronous_standby_loses_and_repeats_nothing(
    synchronous_pair: Pair, tmp_path: Path
) -> None:
    figures = await run_failover(synchronous_pair, tmp_path)
    print("failover figures:", json.dumps(figures))
    assert figures["writers_failed"] == 0, figures["failures"]
    assert figures["lost_acked"] == 0
    assert figures["duplicates"] == 0
    assert figures["sent"] == figures["acked"] == figures["stored"]
    # the server came back to SERVING on the promoted standby
    assert figures["time_to_serving_s"] is not None
