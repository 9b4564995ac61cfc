import datetime as dt

from devtls.expiry import LEAF_WARN_DAYS, ROOT_WARN_DAYS, expiry_problem

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc)


def test_far_from_the_end_is_fine():
    assert expiry_problem(NOW + dt.timedelta(days=ROOT_WARN_DAYS + 1), ROOT_WARN_DAYS, NOW) is None


def test_within_the_window_says_when():
    problem = expiry_problem(NOW + dt.timedelta(days=30, hours=1), ROOT_WARN_DAYS, NOW)
    assert problem == "expires in 30 days (2026-12-31)"
    assert expiry_problem(NOW + dt.timedelta(hours=3), LEAF_WARN_DAYS, NOW) == (
        "expires today (2026-12-01)"
    )
    assert "in 1 day " in str(expiry_problem(NOW + dt.timedelta(days=1, hours=1), 7, NOW))


def test_past_the_end_is_expired():
    assert expiry_problem(NOW - dt.timedelta(days=1), ROOT_WARN_DAYS, NOW) == (
        "expired on 2026-11-30"
    )
