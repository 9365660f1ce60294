"""How a user's files keep time, for `cli.init` (`ml.profile`): the time column (or the parts it is composed
from), each row's week, and the training window the history allows.

Pure: frames in, column names, week numbers and window settings out (with one note per choice).
"""
from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd

from ml.sources import compact_times

PART_NAMES = {"year": ("year", "yyyy", "yr"), "month": ("month", "mnth", "mon", "mm"),
              "day": ("day", "dd", "dom", "mday"), "hour": ("hour", "hr", "hh"), "minute": ("minute", "min")}
PART_RANGES = {"year": (1900, 2100), "month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59)}
# 2013-01-31, 2013/01/31, 1/31/2013, 31.01.2013
DATE_TEXT = (r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}"
             r"|[A-Za-z]{3,9}\.? \d{1,2},? \d{4}|\d{1,2} [A-Za-z]{3,9}\.? \d{4}")  # Jan 31 2013, 31 January 2013
MIN_WEEKS_WITH_DATA = 0.5  # of the weeks the files span; fewer, and the feed is not a weekly one
TRAIN_ROWS = 1000  # the training window should hold at least this many rows when the history allows
MAX_TRAIN_WEEKS = 156  # ... in at most three years of weeks: the land stage validates each week of the window


class ProfileError(ValueError):
    """The files cannot be profiled as asked; the message names the column or option."""


def find_time(data: pd.DataFrame, time: str | None, notes: list[str]) -> tuple[str, dict]:
    """The time column, or one composed from parts (date + hour, or year/month/day[/hour])."""
    if time:
        if time not in data.columns:
            raise ProfileError(f"--time: no column '{time}' in the files; columns: {', '.join(map(str, data.columns))}")
        return _maybe_hour(data, time, notes, given=True)
    found = [c for c in data.columns if _looks_like_time(data[c])]
    if found:
        best = max(found, key=lambda c: data[c].nunique())
        return _maybe_hour(data, best, notes)
    parts = _time_parts(data)
    if {"year", "month", "day"} <= set(parts):
        name = _free_name(data)
        notes.append(f"time '{name}': composed from {', '.join(f'{k}={v}' for k, v in parts.items())} "
                     f"(source.time_parts)")
        return name, parts
    raise ProfileError("no time column found: name it with --time (a column of dates or times), or give the files "
                       "columns for year, month and day")


NUMERIC_DATE = r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}\b"  # 31/01/2013, 01.31.2013: which number is the day?


def day_first(col: pd.Series | None, notes: list[str]) -> bool:
    """Whether the dates in `col` are written day first (31/01/2013): some first number above 12 and no second
    one. Either way pandas reads each value on its own and takes 10/03 as October 3rd but 13/03 as March 13th,
    so a column read without this setting mixes two orders without an error."""
    if col is None or pd.api.types.is_numeric_dtype(col) or pd.api.types.is_datetime64_any_dtype(col):
        return False
    parts = col.dropna().astype(str).str.extract(NUMERIC_DATE).dropna().astype(int)
    if parts.empty:
        return False
    first, second = bool((parts[0] > 12).any()), bool((parts[1] > 12).any())
    if first and not second:
        notes.append(f"dates in '{col.name}' are written day first (e.g. {col.dropna().iloc[0]}: source.dayfirst)")
        return True
    if not first and not second:
        notes.append(f"dates in '{col.name}' could be day or month first (no number above 12): read month first; "
                     f"set source.dayfirst: true if they are day first")
    return False


def _free_name(data: pd.DataFrame) -> str:
    """The name of a composed time column: "time", unless a column of the files has it in any case ("Time"
    holding the time of day: Great Expectations' column lookup then took the text column for the composed one)."""
    taken = {str(c).lower() for c in data.columns}
    return next(n for n in ("time", "event_time", "composed_time") if n not in taken)


def _looks_like_time(col: pd.Series) -> bool:
    """Dates or times as text (ISO, year/month/day, month/day/year, or with the month's name: "Jan 1 2000",
    "1 January 2000"), as digits (19580329, `ml.sources.compact_times`) or a datetime column; epoch numbers
    need --time."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    if compact_times(col) is not None:  # 19580329
        return True
    if pd.api.types.is_numeric_dtype(col) or col.dropna().empty:
        return False
    sample = col.dropna().astype(str).head(200)
    if not sample.str.contains(DATE_TEXT, regex=True).all():
        return False
    return bool(_to_times(sample).notna().mean() > 0.99)


def _to_times(text: pd.Series) -> pd.Series:
    """Times from text; offsets that differ within the column (daylight saving time) are normalised to UTC."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pandas' note on mixed offsets: handled below
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    if not pd.api.types.is_datetime64_any_dtype(parsed):
        parsed = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
    return parsed


def _time_parts(data: pd.DataFrame) -> dict:
    """Columns that hold the parts of a time, recognised by name and checked by their values."""
    out = {}
    lower = {str(c).lower(): c for c in data.columns}
    for part, names in PART_NAMES.items():
        lo, hi = PART_RANGES[part]
        for n in names:
            c = lower.get(n)
            if c is None or not pd.api.types.is_numeric_dtype(data[c]):
                continue
            v = data[c].dropna()
            if len(v) and (v == v.round()).all() and v.min() >= lo and v.max() <= hi:
                out[part] = str(c)
                break
    return out


def _clock_column(data: pd.DataFrame, exclude: str) -> str | None:
    """A text column holding a time of day in every row (17:24:00, 18.00.00), taking more than one value."""
    from ml.sources import CLOCK_TEXT

    for c in data.columns:
        col = data[c]
        if c == exclude or pd.api.types.is_numeric_dtype(col) or col.isna().any() or col.nunique() < 2:
            continue
        if col.astype(str).str.strip().str.fullmatch(CLOCK_TEXT).all():
            return str(c)
    return None


def _maybe_hour(data: pd.DataFrame, time: str, notes: list[str], given: bool = False) -> tuple[str, dict]:
    """A date-only time column plus an hour column (0..23) make an hourly time."""
    t = _to_times(data[time].dropna().astype(str).head(5000))
    parts = _time_parts(data)
    clock = _clock_column(data, exclude=time)
    if (t.dt.normalize() == t).all() and "hour" not in parts and clock:
        name = _free_name(data)
        notes.append(f"time '{name}': the dates in '{time}' plus the time of day in '{clock}' "
                     f"(source.time_parts); '{time}' alone is only a day")
        return name, {"date": time, "clock": clock}
    if (t.dt.normalize() == t).all() and "hour" in parts:
        name = _free_name(data)
        notes.append(f"time '{name}': the dates in '{time}' plus the hour in '{parts['hour']}' "
                     f"(source.time_parts); '{time}' alone is only a day")
        return name, {"date": time, "hour": parts["hour"]}
    notes.append(f"time column '{time}' ({'given' if given else 'the column of dates'}; naive times taken in the "
                 f"time zone below)")
    return time, {}


def week_numbers(times: pd.Series) -> pd.Series:
    """Week number of each row, weeks running Monday 00:00 .. Sunday (UTC), counted from the first."""
    anchor = _monday_on_or_before(times.min())
    return np.floor((times - anchor) / pd.Timedelta(days=7)).astype(int)


def _monday_on_or_before(t: pd.Timestamp) -> pd.Timestamp:
    day = t.tz_convert("UTC").normalize()
    return day - pd.Timedelta(days=day.dayofweek)


def choose_window(weeks: pd.Series, notes: list[str]) -> dict:
    """Training weeks that fit the history, and the first week with a full window before it."""
    counts = weeks.value_counts().sort_index()
    full = counts[counts >= 0.5 * counts.median()]
    n = int(full.index.max() - full.index.min() + 1) if len(full) else 0
    if n < 3:
        raise ProfileError(f"the files span {n} full week(s): a weekly pipeline needs at least 3 (training weeks + "
                           f"the newest week)")
    present = len(full)  # weeks with data: a window is the train_weeks newest of them (ml.split.window_weeks)
    if present < MIN_WEEKS_WITH_DATA * n:
        raise ProfileError(f"the files have rows in {present} of the {n} weeks they span (one week in "
                           f"{n / present:.0f}): the pipeline validates and retrains on weekly batches, so it needs "
                           f"rows in most weeks; a monthly or yearly series is not a weekly feed")
    weekly = float(full.median())
    # 8 weeks keep a model fresh; a thin feed (a row a day) needs more weeks for TRAIN_ROWS rows, up to a third
    # of the weeks with data so that most remain to run on
    wanted = max(8, min(MAX_TRAIN_WEEKS, math.ceil(TRAIN_ROWS / weekly)))
    train_weeks = min(wanted, max(2, present // 3))
    first_full = int(full.index.min())
    as_of_week = first_full + train_weeks  # the newest week's number; its as_of is the Monday after it
    why = (f"{weekly:,.0f} rows a week, so {train_weeks} weeks make ~{train_weeks * weekly:,.0f} training rows"
           if wanted > 8 else f"{n} weeks of history")
    if train_weeks == MAX_TRAIN_WEEKS:
        why += " (at most three years of weeks: each week of the window is landed and validated on its own)"
    notes.append(f"window: {train_weeks} training weeks + the newest week ({why}); {present - train_weeks - 1} "
                 f"weekly runs can follow the first")
    return {"train_weeks": train_weeks, "_as_of_week": as_of_week}


def first_as_of(times: pd.Series, as_of_week: int) -> date:
    """window.as_of (the Monday after the newest week) for week number `as_of_week` of `week_numbers`."""
    start = _monday_on_or_before(times.min())
    return (start + pd.Timedelta(days=7 * (as_of_week + 1))).date()


def week_span(as_of: date) -> str:
    return f"{as_of - timedelta(days=7)}..{as_of - timedelta(days=1)}"
