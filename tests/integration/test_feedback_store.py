"""FeedbackStore against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest

from predictstore.domain.feedback import Feedback, FeedbackFilter, FlaggedFilter, FlaggedInsight
from predictstore.errors import InvalidArgument
from predictstore.storage.database import Database
from predictstore.storage.feedback import FeedbackStore, _list_query


async def count_rows(db: Database, insight_id: str) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM feedback WHERE insight_id = $1", insight_id
        )
    return count


async def listed(
    store: FeedbackStore, flt: FeedbackFilter, after: tuple[datetime, str] | None = None
) -> list[Feedback]:
    return [f for rows in [r async for r in store.stream(flt, after, 7)] for f in rows]


async def test_submit_creates_then_replaces_keeping_create_time(db: Database) -> None:
    store = FeedbackStore(db)
    first, created = await store.submit(
        Feedback("i1", "u1", rating=4, comment="useful", flag_type="misleading", flag_reason="x")
    )
    assert created
    assert first.create_time == first.update_time
    second, created = await store.submit(Feedback("i1", "u1", rating=2))
    assert not created
    assert second.create_time == first.create_time
    assert second.update_time is not None
    assert first.update_time is not None
    assert second.update_time > first.update_time
    # a submit replaces the whole feedback: what the second one left out is gone
    assert (second.rating, second.comment, second.flag_type, second.flag_reason) == (
        2,
        "",
        None,
        "",
    )
    assert await store.get("i1", "u1") == second
    assert await count_rows(db, "i1") == 1


async def test_get_and_delete(db: Database) -> None:
    store = FeedbackStore(db)
    assert await store.get("i1", "u1") is None
    await store.submit(Feedback("i1", "u1", comment="hello"))
    assert await store.delete("i1", "u1")
    assert await store.get("i1", "u1") is None
    assert not await store.delete("i1", "u1")


async def test_the_database_rejects_rating_6_without_validation(db: Database) -> None:
    store = FeedbackStore(db)
    with pytest.raises(InvalidArgument):
        await store.submit(Feedback("i1", "u1", rating=6))
    with pytest.raises(InvalidArgument):
        await store.submit(Feedback("i1", "u1", rating=0))
    assert await store.get("i1", "u1") is None


async def test_the_database_rejects_an_unknown_flag_type(db: Database) -> None:
    with pytest.raises(InvalidArgument):
        await FeedbackStore(db).submit(Feedback("i1", "u1", flag_type="rude"))


async def test_concurrent_submits_of_one_user_leave_one_row(db: Database) -> None:
    store = FeedbackStore(db)
    results = await asyncio.gather(
        *(
            store.submit(Feedback("i1", "u1", rating=1 + n % 5, comment=f"try {n}"))
            for n in range(20)
        )
    )
    assert [created for _, created in results].count(True) == 1
    assert await count_rows(db, "i1") == 1
    stored = await store.get("i1", "u1")
    assert stored is not None
    # the row holds what the last writer wrote, and its update_time is the latest of all
    assert stored.update_time == max(f.update_time for f, _ in results)  # type: ignore[type-var]
    assert stored.comment in {f"try {n}" for n in range(20)}


async def test_stats_match_numbers_computed_by_hand(db: Database) -> None:
    store = FeedbackStore(db)
    seeded = [
        Feedback("i1", "u1", rating=5, comment="great"),
        Feedback("i1", "u2", rating=4),
        Feedback("i1", "u3", rating=4, flag_type="inaccurate"),
        Feedback("i1", "u4", rating=2, comment="meh", flag_type="inaccurate", flag_reason="wrong"),
        Feedback("i1", "u5", comment="no rating", flag_type="spam"),
        Feedback("i1", "u6", rating=1),
        Feedback("other", "u1", rating=3, comment="elsewhere", flag_type="misleading"),
    ]
    for f in seeded:
        await store.submit(f)
    stats = await store.stats("i1")
    assert stats.total_count == 6
    assert stats.rating_count == 5
    assert stats.average_rating == pytest.approx((5 + 4 + 4 + 2 + 1) / 5)  # 3.2
    assert stats.rating_distribution == {1: 1, 2: 1, 3: 0, 4: 2, 5: 1}
    assert stats.comment_count == 3
    assert stats.flag_counts == {"inaccurate": 2, "misleading": 0, "spam": 1}


async def test_stats_of_an_unknown_insight_are_zeros(db: Database) -> None:
    stats = await FeedbackStore(db).stats("nobody-rated-this")
    assert (stats.total_count, stats.rating_count, stats.average_rating) == (0, 0, 0.0)
    assert stats.rating_distribution == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert stats.comment_count == 0
    assert stats.flag_counts == {"inaccurate": 0, "misleading": 0, "spam": 0}


async def test_list_is_newest_first_and_resumes_without_gap_or_repeat(db: Database) -> None:
    store = FeedbackStore(db)
    for n in range(25):
        await store.submit(Feedback("i1", f"u{n:02}", rating=3, comment="c" if n % 2 else ""))
    await store.submit(Feedback("i2", "u00", rating=1))
    flt = FeedbackFilter(insight_id="i1")
    seen = await listed(store, flt)
    assert [f.user_id for f in seen] == [f"u{n:02}" for n in reversed(range(25))]
    assert seen[9].update_time is not None
    after = (seen[9].update_time, seen[9].user_id)
    rest = await listed(store, flt, after)
    assert [f.user_id for f in rest] == [f.user_id for f in seen[10:]]

    commented = await listed(store, FeedbackFilter(insight_id="i1", with_comment_only=True))
    assert [f.user_id for f in commented] == [f"u{n:02}" for n in reversed(range(1, 25, 2))]
    by_user = await listed(store, FeedbackFilter(user_id="u00"))
    assert [f.insight_id for f in by_user] == ["i2", "i1"]
    assert len(await listed(store, FeedbackFilter(insight_id="i1", limit=4))) == 4


async def test_list_honours_the_time_range(db: Database) -> None:
    store = FeedbackStore(db)
    early, _ = await store.submit(Feedback("i1", "early", rating=1))
    late, _ = await store.submit(Feedback("i1", "late", rating=2))
    assert early.update_time is not None
    assert late.update_time is not None
    only_late = await listed(store, FeedbackFilter(insight_id="i1", start_time=late.update_time))
    assert [f.user_id for f in only_late] == ["late"]
    only_early = await listed(store, FeedbackFilter(insight_id="i1", end_time=late.update_time))
    assert [f.user_id for f in only_early] == ["early"]
    none = await listed(
        store, FeedbackFilter(insight_id="i1", start_time=late.update_time + timedelta(seconds=1))
    )
    assert none == []


async def test_flagged_insights_most_flagged_first_with_their_types(db: Database) -> None:
    store = FeedbackStore(db)
    flags = {
        "a": ["spam"] * 3 + ["inaccurate"] * 2,  # 5
        "b": ["misleading"] * 3,  # 3
        "c": ["inaccurate", "spam"],  # 2
        "d": ["inaccurate", "misleading", "inaccurate"],  # 3
    }
    for insight, types in flags.items():
        for n, flag_type in enumerate(types):
            await store.submit(Feedback(insight, f"u{n}", flag_type=flag_type))
    await store.submit(Feedback("c", "rater", rating=5))  # a rating is not a flag

    async def flagged(min_flags: int, after: tuple[int, str] | None = None) -> list[FlaggedInsight]:
        rows = [r async for r in store.stream_flagged(FlaggedFilter(min_flags), after, 2)]
        return [f for batch in rows for f in batch]

    top = await flagged(3)
    assert [(f.insight_id, f.flag_count) for f in top] == [("a", 5), ("b", 3), ("d", 3)]
    assert top[0].flag_counts == {"inaccurate": 2, "spam": 3}
    assert top[0].flag_types == ["inaccurate", "spam"]
    assert top[2].flag_counts == {"inaccurate": 2, "misleading": 1}
    assert [f.insight_id for f in await flagged(2)] == ["a", "b", "d", "c"]
    assert [f.insight_id for f in await flagged(2, after=(3, "b"))] == ["d", "c"]


@pytest.mark.parametrize(
    ("flt", "index"),
    [
        (FeedbackFilter(insight_id="i7"), "feedback_insight_time_idx"),
        (FeedbackFilter(user_id="u7"), "feedback_user_time_idx"),
    ],
    ids=["by_insight", "by_user"],
)
async def test_list_uses_its_index(db: Database, flt: FeedbackFilter, index: str) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO feedback (insight_id, user_id, rating) "
            "SELECT 'i' || (n % 200), 'u' || (n / 200), 1 + n % 5 "
            "FROM generate_series(0, 19999) AS n"
        )
        await conn.execute("ANALYZE feedback")
        sql, args = _list_query(flt, None)
        plan = json.dumps(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
    assert index in plan
    assert '"Seq Scan"' not in plan
    assert len(await listed(FeedbackStore(db), flt)) > 0
