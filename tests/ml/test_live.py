"""The live check is safe to look at daily: on losses no worse than the promise (+ tolerance) it rarely ever
alarms, however many days it is checked; a real degradation is caught within days."""
from __future__ import annotations

import numpy as np

from ml.live import live_check


def ever_alarmed(rng, mean: float, promised: float, days: int = 14, per_day: int = 200) -> bool:
    seen = np.empty(0)
    for _ in range(days):  # one look a day on everything seen so far
        seen = np.concatenate([seen, rng.exponential(mean, per_day)])  # skewed like absolute errors
        check = live_check(seen, promised, tolerance=0.2, alpha=0.05)
        if check is not None and check.degraded:
            return True
    return False


def test_checked_daily_for_two_weeks_it_rarely_alarms_within_the_promise():
    rng = np.random.default_rng(0)
    as_promised = np.mean([ever_alarmed(rng, 10.0, 10.0) for _ in range(200)])
    at_the_bound = np.mean([ever_alarmed(rng, 12.0, 10.0) for _ in range(200)])  # exactly 1 + tolerance
    assert as_promised == 0.0
    assert at_the_bound <= 0.05


def test_a_degradation_is_caught_within_days():
    rng = np.random.default_rng(1)
    days = []
    for _ in range(50):
        seen = np.empty(0)
        for day in range(1, 15):
            seen = np.concatenate([seen, rng.exponential(16.0, 200)])  # 1.6x the promise
            check = live_check(seen, 10.0, tolerance=0.2, alpha=0.05)
            if check.degraded:
                days.append(day)
                break
    assert len(days) == 50 and max(days) <= 3, days


def test_too_few_outcomes_give_no_verdict_and_the_interval_covers_the_ratio():
    rng = np.random.default_rng(2)
    assert live_check(rng.exponential(10.0, 50), 10.0, min_outcomes=100) is None
    check = live_check(rng.exponential(13.0, 2000), 10.0)
    assert check.ratio_low < 1.3 < check.ratio_high and check.outcomes == 2000
