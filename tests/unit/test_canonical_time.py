"""``parse_time`` reads what ``format_time`` writes without strptime, and means the same.

Every request, consent and receipt carries several times that each node parses on
every query, so the canonical form has a fast path; whatever strptime accepted or
refused with the format before, it still accepts or refuses, with the same value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from creditshare._canonical import _TIME_FORMAT, format_time, parse_time
from creditshare.errors import InvalidInputError


def _strptime(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def test_canonical_times_round_trip() -> None:
    moment = datetime(2024, 2, 28, 23, 59, 59, tzinfo=UTC)
    for step in range(400):
        at = moment + timedelta(hours=7 * step, seconds=step)
        assert parse_time(format_time(at), "t") == at


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-31T12:00:00Z",
        "2024-02-29T00:00:00Z",
        "2026-1-31T12:00:00Z",  # not canonical: strptime's reading, as before
        "2026-01-31T2:00:00Z",
        "2026-13-01T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2026-01-31T24:00:00Z",
        "2026-01-31T12:00:60Z",
        "2026-01-31T12:00:00",
        "2026-01-31 12:00:00Z",
        "0000-01-01T00:00:00Z",
        "２０２６-01-31T12:00:00Z",
        "٢٠٢٦-٠١-٣١T١٢:٠٠:٠٠Z",  # Arabic-Indic digits throughout
        "2026-01-31T12:00:0٥Z",
        "2026-01-31t12:00:00z",  # strptime ignores case
        "2026-01-31T12:00:00+00:00",
        "2026-01-31T12:00:00.5Z",
        "2026-01-31T12:00:61Z",
        "2026-01-31T12:00:00Z\n",
        " 2026-01-31T12:00:00Z",
        "+2026-01-31T12:00:00Z",
        "",
    ],
)
def test_every_text_means_what_strptime_said(text: str) -> None:
    expected = _strptime(text)
    if expected is None:
        with pytest.raises(InvalidInputError, match="must look like"):
            parse_time(text, "t")
    else:
        assert parse_time(text, "t") == expected
