"""Feedback on insights: the model, its statistics, its filters and its validation.

A flag type is one of the text values the ``feedback.flag_type`` column accepts; ``None``
means the user did not flag the insight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from predictstore.domain.validation import check_id, check_text
from predictstore.errors import FieldViolation

# The flag types in the order clients see them (the proto enum's order).
FLAG_TYPES = ("inaccurate", "misleading", "spam")
RATINGS = (1, 2, 3, 4, 5)


@dataclass(frozen=True, slots=True)
class Feedback:
    """One user's feedback on one insight. The store sets the two times."""

    insight_id: str
    user_id: str
    rating: int | None = None
    comment: str = ""
    flag_type: str | None = None
    flag_reason: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class FeedbackStats:
    """What an insight's feedback adds up to; every count is zero for an unknown insight."""

    insight_id: str
    total_count: int = 0
    rating_count: int = 0
    average_rating: float = 0.0
    rating_distribution: dict[int, int] = field(default_factory=lambda: dict.fromkeys(RATINGS, 0))
    comment_count: int = 0
    flag_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLAG_TYPES, 0))


@dataclass(frozen=True, slots=True)
class FlaggedInsight:
    """An insight with its number of flags, by type (only the types present)."""

    insight_id: str
    flag_count: int
    flag_counts: dict[str, int]

    @property
    def flag_types(self) -> list[str]:
        """The distinct flag types present, in FLAG_TYPES order."""
        return [t for t in FLAG_TYPES if self.flag_counts.get(t)]


@dataclass(frozen=True, slots=True)
class FeedbackLimits:
    max_id_length: int = 256
    max_comment_length: int = 4000
    max_flag_reason_length: int = 1000


@dataclass(frozen=True, slots=True)
class FeedbackFilter:
    """What ListFeedback selects: one insight's or one user's feedback, newest first."""

    insight_id: str = ""
    user_id: str = ""
    with_comment_only: bool = False
    start_time: datetime | None = None
    end_time: datetime | None = None
    limit: int = 0


@dataclass(frozen=True, slots=True)
class FlaggedFilter:
    """What ListFlaggedInsights selects: insights with at least ``min_flags`` flags."""

    min_flags: int
    limit: int = 0


def validate_feedback(f: Feedback, limits: FeedbackLimits) -> list[FieldViolation]:
    """Every violation of one submitted feedback."""
    violations = [
        *check_id("insight_id", f.insight_id, limits.max_id_length),
        *check_id("user_id", f.user_id, limits.max_id_length),
        *check_text("comment", f.comment, limits.max_comment_length),
        *check_text("flag_reason", f.flag_reason, limits.max_flag_reason_length),
    ]
    if f.rating is not None and f.rating not in RATINGS:
        violations.append(FieldViolation("rating", "must be between 1 and 5"))
    if f.flag_type is not None and f.flag_type not in FLAG_TYPES:
        violations.append(FieldViolation("flag_type", "must be one of " + ", ".join(FLAG_TYPES)))
    if f.flag_reason and f.flag_type is None:
        violations.append(FieldViolation("flag_reason", "is only allowed with a flag_type"))
    if f.rating is None and not f.comment and f.flag_type is None:
        violations.append(
            FieldViolation("request", "must carry at least one of rating, comment and flag_type")
        )
    return violations


def validate_key(insight_id: str, user_id: str, limits: FeedbackLimits) -> list[FieldViolation]:
    """Violations of the (insight_id, user_id) pair that names one feedback."""
    return [
        *check_id("insight_id", insight_id, limits.max_id_length),
        *check_id("user_id", user_id, limits.max_id_length),
    ]


def validate_insight_id(insight_id: str, limits: FeedbackLimits) -> list[FieldViolation]:
    return check_id("insight_id", insight_id, limits.max_id_length)


def validate_filter(f: FeedbackFilter, limits: FeedbackLimits) -> list[FieldViolation]:
    violations = [
        *check_id("insight_id", f.insight_id, limits.max_id_length, required=False),
        *check_id("user_id", f.user_id, limits.max_id_length, required=False),
    ]
    if bool(f.insight_id) == bool(f.user_id):
        violations.append(
            FieldViolation("insight_id", "give exactly one of insight_id and user_id")
        )
    if f.start_time and f.end_time and f.start_time >= f.end_time:
        violations.append(FieldViolation("end_time", "must be after start_time"))
    return violations
