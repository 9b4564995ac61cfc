"""When a certificate is close enough to its end that a user should hear about it.

One rule for ``status``, ``doctor`` and ``serve``'s banner, so they never disagree.
"""

from __future__ import annotations

import datetime as dt

# A root takes a round of installs on every machine and device to replace: warn a quarter
# ahead. A served leaf is minted again in seconds: a week is enough.
ROOT_WARN_DAYS = 90
LEAF_WARN_DAYS = 7


def expiry_problem(
    not_after: dt.datetime, warn_days: int, now: dt.datetime | None = None
) -> str | None:
    """``None`` while ``not_after`` is more than ``warn_days`` away, else what to say."""
    now = now or dt.datetime.now(dt.timezone.utc)
    left = not_after - now
    if left <= dt.timedelta(0):
        return f"expired on {not_after:%Y-%m-%d}"
    if left <= dt.timedelta(days=warn_days):
        days = left.days
        when = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
        return f"expires {when} ({not_after:%Y-%m-%d})"
    return None
