"""Inclusive time windows given as ISO dates or datetimes, in Unix seconds (validate and clean share it)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone


def _parse_iso(text: str, *, upper: bool) -> int:
    """Unix seconds of an ISO date/datetime; naive means UTC; a bare date as an upper bound means its last second."""
    text = text.strip()
    try:
        if len(text) == 10 and "T" not in text and " " not in text:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            if upper:
                moment += timedelta(days=1, seconds=-1)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
    except ValueError as err:
        raise ValueError(f"time_window bound {text!r} is not an ISO date or datetime: {err}") from err
    return int(moment.timestamp())


def window_bounds(window: tuple[str, str]) -> tuple[int, int]:
    """Inclusive ``(low, high)`` Unix seconds of a ``ValidationConfig.time_window`` (CLEAN reuses this)."""
    if len(window) != 2:
        raise ValueError(f"time_window must be (start, end), got {window!r}")
    return _parse_iso(window[0], upper=False), _parse_iso(window[1], upper=True)
