"""How the API reads a point in time from a request (a task's `scheduled_at`).

Apart from service/rules.py because two readers share it: the rules that check a new task, and the
marshmallow field that describes `scheduled_at` in the OpenAPI document (service/create_schemas.py),
so both accept and refuse the same strings with the same messages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

# Messages in marshmallow's wording, like service/rules.py's, so body and query errors read alike.
NOT_DATETIME: Final = "Not a valid datetime: use ISO 8601, e.g. 2030-01-31T09:00:00+01:00."
NAIVE_DATETIME: Final = "Must include a UTC offset (+00:00 or Z): without one it is ambiguous."
_LAST: Final = datetime.max.replace(tzinfo=UTC)


def parse_datetime(value: Any) -> datetime | str:
    """An ISO 8601 time with a UTC offset, in UTC, or the message saying why it is not one.

    In UTC because PostgreSQL takes offsets up to 15:59 only (RFC 3339 allows 23:59). A time
    before year 1 in UTC is taken as year 1 (any past time means now), one after 9999 as the
    last instant of 9999 (what a reader of the task can still parse).
    """
    if type(value) is not str:
        return NOT_DATETIME
    try:
        # RFC 3339 allows a lower-case t and z; Python's parser wants them upper-case.
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        return NOT_DATETIME
    if parsed.utcoffset() is None:
        return NAIVE_DATETIME
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC) if parsed.year == 1 else _LAST
