"""The read-replica arithmetic a routing decision rests on: URL lists, display names,
and the lag bound of storage.replicas, on hand-made samples."""

from __future__ import annotations

import pytest

from predictstore.storage.replicas import ReplicaState, display_name, lag_bound, split_urls


@pytest.mark.parametrize(
    ("value", "urls"),
    [
        ("", []),
        ("postgresql://a/db", ["postgresql://a/db"]),
        (
            "postgresql://a/db, postgres://b:5433/db",
            ["postgresql://a/db", "postgres://b:5433/db"],
        ),
        # a multi-host URL keeps its commas
        (
            "postgresql://a:1,b:2/db?target_session_attrs=any,postgresql://c/db",
            ["postgresql://a:1,b:2/db?target_session_attrs=any", "postgresql://c/db"],
        ),
    ],
)
def test_split_urls_keeps_multi_host_urls_whole(value: str, urls: list[str]) -> None:
    assert split_urls(value) == urls


def test_display_name_shows_hosts_and_database_but_no_credentials() -> None:
    assert display_name("postgresql://user:secret@db1:5432/predictstore") == "db1:5432/predictstore"
    assert display_name("postgresql://h1:1,h2:2/x") == "h1:1,h2:2/x"
    assert display_name("postgresql:///x?host=/run/pg") == "/run/pg/x"
    assert "secret" not in display_name("postgresql://u:secret@h")


def test_an_idle_caught_up_standby_has_a_small_bound() -> None:
    """Its last replayed commit is old (the primary is idle), but its replay has reached
    the newest primary sample: the bound is the age of that sample."""
    samples = [(100.0, 1_000), (101.0, 1_000), (102.0, 1_000)]
    assert lag_bound(samples, 1_000, since_replay_s=3600.0, now=102.5) == pytest.approx(0.5)


def test_a_standby_behind_is_bounded_by_the_newest_sample_it_reached() -> None:
    samples = [(100.0, 1_000), (101.0, 2_000), (102.0, 3_000)]
    # replayed up to 2,500: everything before the sample at 101 s is visible
    assert lag_bound(samples, 2_500, since_replay_s=None, now=103.0) == pytest.approx(2.0)
    # the time since its last replayed commit is smaller: that bound wins
    assert lag_bound(samples, 2_500, since_replay_s=0.25, now=103.0) == pytest.approx(0.25)


def test_the_bound_is_unknown_without_either_measure() -> None:
    samples = [(100.0, 5_000)]
    assert lag_bound(samples, 4_000, since_replay_s=None, now=101.0) is None  # not reached
    assert lag_bound([], None, since_replay_s=None, now=101.0) is None
    # a clock step cannot make a bound negative
    assert lag_bound([], None, since_replay_s=-2.0, now=101.0) == 0.0


def test_a_bound_ages_while_the_monitor_is_silent() -> None:
    state = ReplicaState(name="s", pool=None, lag_s=0.5, measured_at=10.0)  # type: ignore[arg-type]
    assert state.lag_now(now=10.0) == pytest.approx(0.5)
    assert state.lag_now(now=14.0) == pytest.approx(4.5)
    assert ReplicaState(name="s", pool=None).lag_now(now=14.0) is None  # type: ignore[arg-type]
