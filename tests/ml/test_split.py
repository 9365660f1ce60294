from datetime import date

import pandas as pd
import pytest

from ml.split import EmptyWeekError, slice_week, training_weeks, week_bounds, week_label


def frame(start: str, hours: int) -> pd.DataFrame:
    t = pd.date_range(start, periods=hours, freq="h", tz="UTC")
    return pd.DataFrame({"t": t, "y": range(hours)})


@pytest.mark.parametrize("as_of,start,end", [
    (date(2013, 6, 2), "2013-05-26", "2013-06-02"),
    (date(2013, 1, 8), "2013-01-01", "2013-01-08"),
])
def test_week_bounds(as_of, start, end):
    lo, hi = week_bounds(as_of)
    assert (lo, hi) == (pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))


def test_training_weeks_are_the_weeks_before_the_newest_oldest_first():
    weeks = training_weeks(date(2013, 6, 2), 3)
    assert weeks == [date(2013, 5, 12), date(2013, 5, 19), date(2013, 5, 26)]


def test_slice_week_is_half_open_and_disjoint():
    df = frame("2013-05-01", 24 * 40)
    a, b = slice_week(df, "t", date(2013, 5, 19)), slice_week(df, "t", date(2013, 5, 26))
    assert len(a) == len(b) == 24 * 7
    assert a["t"].max() < b["t"].min()
    assert b["t"].min() == pd.Timestamp("2013-05-19", tz="UTC")


def test_empty_week_names_the_week_and_the_range():
    df = frame("2013-05-01", 24 * 10)
    with pytest.raises(EmptyWeekError, match=r"2013-06-26\.\.2013-07-02.*covers 2013-05-01"):
        slice_week(df, "t", date(2013, 7, 3))
    assert week_label(date(2013, 7, 3)) == "2013-06-26..2013-07-02"
