"""Time-based splits: a week is the 7 days before its `as_of` date; training = the N weeks before that."""
from __future__ import annotations

from datetime import date, timedelta

import numpy as np
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


def weeks_with_rows(times: pd.Series, as_of: date) -> set[date]:
    """`as_of` keys (aligned with `as_of`'s weekday) of every week in which `times` has a row."""
    end = pd.Timestamp(as_of, tz="UTC")
    offsets = np.floor((times - end) / pd.Timedelta(days=7)).astype(int).unique()
    return {as_of + timedelta(days=7 * (int(k) + 1)) for k in offsets}


def window_weeks(as_of: date, n: int, has_rows: set[date], oldest: date | None = None) -> list[date]:
    """The training window of the week ending at `as_of`: the n newest weeks before it that have rows, oldest first.

    Without a gap these are the n calendar weeks before `as_of` (`training_weeks`). After a feed fell silent the
    window reaches back over the silent weeks to the last n weeks with data (no further back than `oldest`, the
    source's first week); it may then hold fewer than n weeks. Weeks with rows that the gate later rejects still
    take their place in the window (the window shrinks; it never reaches back past a quarantined week)."""
    oldest = oldest or min(has_rows, default=as_of)
    out: list[date] = []
    w = as_of - timedelta(days=7)
    while len(out) < n and w >= oldest:
        if w in has_rows:
            out.append(w)
        w -= timedelta(days=7)
    calendar = training_weeks(as_of, n)
    if not out or set(calendar) <= has_rows | {c for c in calendar if c < oldest}:
        return calendar  # no gap (or nothing at all): the calendar window, absent weeks reported as such
    return sorted(out)


def describe_window(as_of: date, weeks: list[date], n: int) -> str | None:
    """Why the window is not the n calendar weeks before `as_of`, in words (None when it is)."""
    calendar = training_weeks(as_of, n)
    if weeks == calendar:
        return None
    silent = (as_of - weeks[-1]).days // 7 - 1 + sum((b - a).days // 7 - 1
                                                     for a, b in zip(weeks, weeks[1:], strict=False))
    return (f"training window {week_label(weeks[0]).split('..')[0]}..{week_label(weeks[-1]).split('..')[1]}: the "
            f"{len(weeks)} newest weeks with data; {silent} week(s) without any rows in between skipped "
            f"(the newest training data is {(as_of - weeks[-1]).days // 7 - 1} week(s) older than the week judged)")
