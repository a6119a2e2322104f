"""Read replicas: one pool per standby, their replication lag, and which one serves a read.

``read_database_url`` names the standbys (comma-separated URLs; each may itself be a
multi-host URL, of which asyncpg takes the first host that answers). The monitor samples
every ``read_lag_check_interval_s``:

- the primary's ``pg_current_wal_lsn()``, kept with the time it was read;
- per standby ``pg_is_in_recovery()``, ``pg_last_wal_replay_lsn()`` and
  ``now() - pg_last_xact_replay_timestamp()``.

A standby's lag is an upper bound of how stale a read served by it may be, the smaller of
two bounds: the time since the last transaction it replayed (the classic measure, which
alone grows without end on an idle primary), and the time since the newest primary sample
its replay position has reached (everything committed before that sample is visible on
it; this one stays near zero on an idle primary once the standby has caught up). At
routing time the bound is aged by the time since it was measured, so a monitor that
stops answering makes its standby fall out of routing rather than look fresh.

A read goes to the first standby (in the order configured) that answered its last check
and whose aged lag is within ``read_max_lag_s``, else to the primary. A standby that is no
longer in recovery (promoted) has lag 0: it is a primary, as fresh as any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import asyncpg

log = logging.getLogger(__name__)

# Where the primary's WAL ends now, as a byte position.
SELECT_PRIMARY_LSN = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"

# A standby's state: in recovery, replay position, seconds since the last replayed commit.
SELECT_STANDBY_STATE = """
SELECT pg_is_in_recovery(),
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
"""

# primary samples kept to bound a standby's lag (at 1 s a check: about an hour)
MAX_SAMPLES = 4096
_SPLIT = re.compile(r"\s*,\s*(?=postgres(?:ql)?://)")


def split_urls(value: str) -> list[str]:
    """The URLs of a comma-separated list; commas inside a multi-host URL stay in it."""
    return [url for url in _SPLIT.split(value.strip()) if url]


def display_name(url: str) -> str:
    """HOST:PORT[/DATABASE] of ``url``, without credentials: safe to show and to export."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        hosts = ",".join(parse_qs(parts.query).get("host", ["local"]))
    database = parts.path.lstrip("/")
    return f"{hosts}/{database}" if database else hosts


@dataclass(slots=True)
class ReplicaState:
    """What the monitor last saw of one standby."""

    name: str
    pool: asyncpg.Pool
    reachable: bool = False
    in_recovery: bool = True
    lag_s: float | None = None  # upper bound at ``measured_at``; None: unknown
    measured_at: float = 0.0  # time.monotonic()
    error: str = ""

    def lag_now(self, now: float | None = None) -> float | None:
        """The lag bound aged by the time since it was measured."""
        if self.lag_s is None:
            return None
        elapsed = (time.monotonic() if now is None else now) - self.measured_at
        return self.lag_s + max(0.0, elapsed)


def lag_bound(
    samples: Sequence[tuple[float, int]],
    replay_lsn: int | None,
    since_replay_s: float | None,
    now: float,
) -> float | None:
    """The smaller of the two bounds of the module doc; None when neither is known.

    ``samples`` are (monotonic time, primary LSN) in time order.
    """
    bounds = []
    if since_replay_s is not None:
        bounds.append(max(0.0, since_replay_s))
    if replay_lsn is not None:
        reached = [t for t, lsn in samples if lsn <= replay_lsn]
        if reached:
            bounds.append(max(0.0, now - reached[-1]))
    return min(bounds) if bounds else None


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One standby as GetServerInfo, GetStorageStats and the lag gauge show it."""

    name: str
    lag_s: float | None
    reachable: bool
    in_recovery: bool
    serving_reads: bool


class ReadReplicas:
    """The standbys' pools and their lag, refreshed by :meth:`run`."""

    def __init__(
        self,
        replicas: Sequence[ReplicaState],
        primary: asyncpg.Pool,
        *,
        max_lag_s: float,
        interval_s: float,
        check_timeout_s: float = 2.0,
    ) -> None:
        self.replicas = list(replicas)
        self.primary = primary
        self.max_lag_s = max_lag_s
        self.interval_s = interval_s
        self.check_timeout_s = check_timeout_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)

    def choose(self) -> list[ReplicaState]:
        """The standbys a read may go to now, in the order to try them."""
        now = time.monotonic()
        out = []
        for replica in self.replicas:
            lag = replica.lag_now(now)
            if replica.reachable and lag is not None and lag <= self.max_lag_s:
                out.append(replica)
        return out

    def statuses(self) -> list[ReplicaStatus]:
        serving = {id(r) for r in self.choose()}
        now = time.monotonic()
        return [
            ReplicaStatus(r.name, r.lag_now(now), r.reachable, r.in_recovery, id(r) in serving)
            for r in self.replicas
        ]

    def mark_down(self, replica: ReplicaState, error: str) -> None:
        """Take ``replica`` out of routing until its next successful check."""
        if replica.reachable:
            log.warning(
                "read replica unreachable",
                extra={"action": "replica_down", "replica": replica.name, "error": error[:200]},
            )
        replica.reachable = False
        replica.error = error[:200]

    async def check(self) -> None:
        """One round: the primary's position, then every standby's."""
        try:
            async with asyncio.timeout(self.check_timeout_s):
                lsn = await self.primary.fetchval(SELECT_PRIMARY_LSN)
            self._samples.append((time.monotonic(), int(lsn)))
        except Exception as exc:  # the primary is down: standbys' bounds keep growing
            log.debug(
                "primary position unknown",
                extra={"action": "replica_primary_lsn", "error": str(exc)[:200]},
            )
        for replica in self.replicas:
            await self._check_one(replica)

    async def _check_one(self, replica: ReplicaState) -> None:
        try:
            async with asyncio.timeout(self.check_timeout_s):
                row = await replica.pool.fetchrow(SELECT_STANDBY_STATE)
        except Exception as exc:  # any failure: not routable until it answers again
            self.mark_down(replica, str(exc) or type(exc).__name__)
            return
        now = time.monotonic()
        in_recovery, replay_lsn, since_replay_s = row[0], row[1], row[2]
        if not replica.reachable:
            log.info(
                "read replica reachable",
                extra={"action": "replica_up", "replica": replica.name},
            )
        replica.reachable, replica.in_recovery, replica.error = True, bool(in_recovery), ""
        replica.lag_s = (
            lag_bound(self._samples, replay_lsn, since_replay_s, now) if in_recovery else 0.0
        )
        replica.measured_at = now

    async def run(self) -> None:
        """Check forever; cancel the task to stop."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # logged; the next round tries again
                log.exception("replica check failed", extra={"action": "replica_check_failed"})
            await asyncio.sleep(self.interval_s)

    async def close(self, timeout_s: float) -> None:
        for replica in self.replicas:
            try:
                await asyncio.wait_for(replica.pool.close(), timeout_s)
            except TimeoutError:
                replica.pool.terminate()
            except Exception:  # a broken pool: nothing left to close cleanly
                with contextlib.suppress(Exception):
                    replica.pool.terminate()
