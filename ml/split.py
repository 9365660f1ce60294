"""Time-based splits: a week is the 7 days before its `as_of` date; training = the N weeks before that."""
from __future__ import annotations

from datetime import date, timedelta

import pandas as pd


class EmptyWeekError(ValueError):
    """A requested week has no rows in the source; the message names the week and the data's range."""


def week_bounds(as_of: date) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) in UTC of the week that ends (exclusive) at `as_of`."""
    end = pd.Timestamp(as_of, tz="UTC")
    return end - pd.Timedelta(days=7), end


def training_weeks(as_of: date, n: int) -> list[date]:
    """`as_of` keys of the n weeks before the newest week, oldest first."""
    return [as_of - timedelta(days=7 * k) for k in range(n, 0, -1)]


def week_label(as_of: date) -> str:
    """Human name of a week: first and last day, e.g. '2013-05-26..2013-06-01'."""
    return f"{as_of - timedelta(days=7)}..{as_of - timedelta(days=1)}"


def slice_week(df: pd.DataFrame, time_column: str, as_of: date, *, allow_empty: bool = False) -> pd.DataFrame:
    """Rows of `df` whose time falls in the week ending at `as_of`."""
    start, end = week_bounds(as_of)
    t = df[time_column]
    out = df[(t >= start) & (t < end)].reset_index(drop=True)
    if out.empty and not allow_empty:
        if len(df):
            lo, hi = t.min(), t.max()
            span = f"the source covers {lo:%Y-%m-%d %H:%M} .. {hi:%Y-%m-%d %H:%M} UTC"
        else:
            span = "the source is empty"
        raise EmptyWeekError(f"no rows for the week {week_label(as_of)} (as_of={as_of}); {span}")
    return out
