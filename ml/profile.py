"""Profile a user's files and choose every setting of params.yaml for them, each with the reason in words.

Pure: frames in, a `Profile` out (the chosen sections as plain values + one note per choice). The command that
reads the files and writes params.yaml is `python -m cli.init`; rendering lives in `ml.render`, the
false-alarm budget of the contract in `ml.budget`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.config import SourceConfig
from ml.first_contract import first_contract
from ml.sources import calendar_columns, flags_as_numbers, prepare_frame, synthesise_unit_id
from ml.timeline import ProfileError, choose_window, day_first, find_time, first_as_of, week_numbers, week_span

__all__ = ["Profile", "ProfileError", "profile", "week_span"]

MAX_CATEGORIES = 100  # text columns with more distinct values are identifiers or free text, not categories
MAX_CLASSES = 20  # a numeric target with at most this many values is a class label
LEAK_CORRELATION = 0.95  # a feature this correlated with the target is taken as a leak of it
LABEL = re.compile(r"^\s*(?P<column>.+?)\s*>\s*(?P<value>-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


@dataclass
class Profile:
    """The chosen params sections and, for each choice, why."""

    source: dict
    window: dict
    evaluate: dict
    validation: dict
    policy: dict
    registry: dict
    notes: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def profile(files: dict[str, pd.DataFrame], *, path: str, target: str, task: str | None = None,
            time: str | None = None, timezone: str = "UTC", na_values: list[str] | None = None,
            unit_id: str | None = None, model_name: str | None = None, dataset: str = "data",
            drop: tuple[str, ...] = ()) -> Profile:
    """Choose source, window, validation, slices and names for `files` (name -> frame, read as delivered)."""
    notes: list[str] = []
    files = _common_columns(files, notes)
    frames = list(files.values())
    columns = [str(c) for c in frames[0].columns]
    data = pd.concat(frames, ignore_index=True)

    target_col, label, task = _target(data, target, task, notes)
    time_col, parts = find_time(data, time, notes)
    timezone = _files_zone(data, time_col, timezone, notes)
    dates = parts.get("date", time_col)  # the column whose text holds the day and the month
    dayfirst = day_first(data[dates] if dates in data.columns else None, notes)
    cfg = SourceConfig(kind="files", path=path, time_column=time_col, target=target_col, task=task,
                       numeric_features=(), categorical_features=(), time_parts=parts, timezone=timezone,
                       dayfirst=dayfirst,
                       na_values=tuple(na_values) if na_values is not None else None, label=label)
    # the source's own derivation (time, label), once per file: unit ids below are synthesised per file too
    per_file = {name: prepare_frame(df, cfg, name, strict=False) for name, df in files.items()}
    derived = pd.concat(per_file.values(), ignore_index=True)
    times = derived[time_col]
    uid, uid_from, uid_drop = _unit_id(files, derived, cfg, unit_id, notes)
    cfg_unit = SourceConfig(**{**cfg.__dict__, "unit_id": uid, "unit_id_from": tuple(uid_from)})
    if uid_from:
        derived[uid] = pd.concat([synthesise_unit_id(df, cfg_unit, name) for name, df in per_file.items()],
                                 ignore_index=True)
    calendar = _calendar(derived, time_col, timezone, notes)

    missing = [c for c in drop if c not in columns]
    if missing:
        raise ProfileError(f"--drop: no column(s) {', '.join(map(repr, missing))} in the files")
    skip = {time_col, target_col, *parts.values(), *([label.column] if label else []), *uid_drop,
            *([uid] if uid else []), *drop}
    numeric, categorical, dropped = _features(derived, [c for c in columns if c not in skip], target_col, task,
                                              notes)
    if drop:
        dropped = [*drop, *dropped]
        notes.append(f"dropped as asked (--drop): {', '.join(drop)}")
    flags_as_numbers(derived, numeric)
    clock = _clock_columns(derived, numeric, times, timezone, notes)
    numeric += [f"cal_{c}" for c in calendar]

    weeks = week_numbers(times)
    window = choose_window(weeks, notes)
    window["as_of"] = first_as_of(times, window.pop("_as_of_week"))
    src = {"kind": "files", "path": path, "time_column": time_col, "time_parts": parts or None,
           "timezone": timezone, "dayfirst": dayfirst, "na_values": na_values, "target": target_col, "label": (
               {"column": label.column, "above": label.above} if label else None), "task": task,
           "unit_id": uid, "unit_id_from": uid_from or None, "calendar": calendar, "numeric_features": numeric,
           "categorical_features": categorical, "drop": dropped}
    validation = first_contract(derived, src, weeks, window["train_weeks"], notes, clock=clock)
    evaluate, policy = _slices(derived, times, numeric, categorical, notes)
    name = model_name or _slug(f"{dataset}-{target_col}")
    notes.append(f"model name '{name}' (registry.model_name), from the data folder and the target")
    summary = {"rows": len(data), "files": len(files), "first": times.min(), "last": times.max(),
               "weeks": int(weeks.nunique()), "weekly_rows": int(weeks.value_counts().median())}
    return Profile(source=src, window=window, evaluate=evaluate, validation=validation, policy=policy,
                   registry={"model_name": name}, notes=notes, summary=summary)


def _files_zone(data: pd.DataFrame, time_col: str, timezone: str, notes: list[str]) -> str:
    """The zone the files' times carry, when they carry one and none was given: the calendar is local to it."""
    zone = getattr(data[time_col].dtype, "tz", None) if time_col in data.columns else None
    if zone is None or timezone != "UTC" or str(zone) in ("UTC", "utc"):
        return timezone
    notes.append(f"time zone {zone}: the zone the files' times carry (source.timezone; the calendar features are "
                 f"local to it)")
    return str(zone)


def _calendar(derived: pd.DataFrame, time_col: str, timezone: str, notes: list[str]) -> list[str]:
    """The calendar features, added to `derived`: the hour of day for several readings a day (not one a day at a
    time of day that moves with the clocks, as in UTC offsets), the weekday and the month."""
    times = derived[time_col]
    steps = pd.Series(np.sort(times.unique())).diff().dropna()
    sub_daily = bool(len(steps)) and steps.median() < pd.Timedelta(hours=20)
    calendar = ["hour", "day_of_week", "month"] if sub_daily else ["day_of_week", "month"]
    for name, values in calendar_columns(times, tuple(calendar), timezone).items():
        derived[name] = values
    notes.append(f"calendar features {', '.join('cal_' + c for c in calendar)}: derived from '{time_col}' in "
                 f"{timezone} (source.calendar)")
    return calendar


# ------------------------------------------------------------------------------------------------------- target

def _target(data: pd.DataFrame, target: str, task: str | None, notes: list[str]):
    """The target column (or a label derived as 'column>value'), and the task it implies."""
    m = LABEL.match(target) if target not in data.columns else None
    if m:
        column, value = m["column"], float(m["value"])
        if column not in data.columns:
            raise ProfileError(f"--target '{target}': no column '{column}' in the files")
        if not pd.api.types.is_numeric_dtype(data[column]):
            raise ProfileError(f"--target '{target}': column '{column}' is not numeric")
        if task not in (None, "classification"):
            raise ProfileError(f"--target '{target}' is a class label, so --task must be classification")
        name = _slug(f"{column} above {value:g}").replace("-", "_")
        y = data[column].dropna() > value
        notes.append(f"target '{name}' = 1 when '{column}' > {value:g} (source.label), else 0: binary "
                     f"classification, {y.mean():.1%} positive")
        from ml.config import LabelConfig

        return name, LabelConfig(column=column, above=value), "classification"
    if target not in data.columns:
        close = [c for c in data.columns if str(c).lower() == target.lower()]
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ProfileError(f"--target: no column '{target}' in the files{hint}; columns: "
                           f"{', '.join(map(str, data.columns))}")
    y = data[target].dropna()
    if y.empty:
        raise ProfileError(f"--target: column '{target}' has no values")
    n = int(y.nunique())
    inferred = "regression" if pd.api.types.is_numeric_dtype(y) and n > MAX_CLASSES else "classification"
    if task is None:
        task = inferred
        kind = ("regression" if task == "regression" else
                "binary classification" if n == 2 else f"multiclass classification ({n} classes)")
        notes.append(f"task {task}: '{target}' is {kind} ({n:,} distinct values; override with --task)")
    elif task == "regression" and not pd.api.types.is_numeric_dtype(y):
        raise ProfileError(f"--task regression: target '{target}' is not numeric")
    if task == "classification" and n < 2:
        raise ProfileError(f"--target '{target}' has a single value: nothing to classify")
    return target, None, task


# ------------------------------------------------------------------------------------------------------ unit id

def _unit_id(files: dict[str, pd.DataFrame], derived: pd.DataFrame, cfg: SourceConfig, given: str | None,
             notes: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(unit id column, columns it is synthesised from, row counters to drop)."""
    counters = [c for c in derived.columns if c not in cfg.derived and _is_row_counter(files, c)]
    if given:
        if given not in derived.columns:
            raise ProfileError(f"--unit-id: no column '{given}' in the files")
        if derived[given].isna().any() or derived[given].duplicated().any():
            raise ProfileError(f"--unit-id: column '{given}' is not a unique, never-null id of a row")
        notes.append(f"unit id '{given}' (given)")
        return given, [], counters
    for c in derived.columns:
        col = derived[c]
        if c in (cfg.time_column, cfg.target) or c in cfg.time_parts.values() or pd.api.types.is_float_dtype(col):
            continue
        if col.notna().all() and not col.duplicated().any() and not pd.api.types.is_datetime64_any_dtype(col):
            notes.append(f"unit id '{c}': unique and never null in all {len(col):,} rows")
            return str(c), [], [x for x in counters if x != c]
    name = "unit_id" if "unit_id" not in derived.columns else "row_key"
    small = [c for c in derived.columns if derived[c].dtype == object and 1 < derived[c].nunique() <= MAX_CATEGORIES
             and c not in (cfg.target,)]
    for combo in ([cfg.time_column], *([cfg.time_column, c] for c in small)):
        if not derived[combo].isna().any(axis=None) and not derived.duplicated(subset=combo).any():
            notes.append(f"unit id '{name}': no column identifies a row, so it is synthesised from "
                         f"{' + '.join(combo)} (unique in every row; source.unit_id_from)")
            return name, list(combo), counters
    notes.append(f"unit id '{name}': no column or combination identifies a row, so it is the file name + row "
                 f"number (stable as long as the files are not rewritten)")
    return name, ["_file", "_row"], counters


def _is_row_counter(files: dict[str, pd.DataFrame], column: str) -> bool:
    """An integer column that numbers the rows of every file (1, 2, 3 ..., with gaps where rows were left out):
    it carries no information but the row's place, a proxy of time."""
    for df in files.values():
        if column not in df.columns or not pd.api.types.is_integer_dtype(df[column]):
            return False
        v = df[column].to_numpy()
        if len(v) < 2 or not (np.diff(v) >= 1).all() or v[0] < 0 or v[-1] - v[0] > 2 * len(v):
            return False
    return True


# ----------------------------------------------------------------------------------------------------- features

def _common_columns(files: dict[str, pd.DataFrame], notes: list[str]) -> dict[str, pd.DataFrame]:
    """The files restricted to the columns every one of them has (in the first file's order): a column a feed
    added later (or dropped) is not a feature, and is named. A later batch may carry it: an extra column passes
    the contract."""
    common = [c for c in next(iter(files.values())).columns if all(c in df.columns for df in files.values())]
    if not common:
        raise ProfileError(f"the files share no column ({', '.join(files)})")
    counts: dict[str, int] = {}
    for df in files.values():
        for c in df.columns:
            counts[str(c)] = counts.get(str(c), 0) + 1
    partial = {c: n for c, n in counts.items() if n < len(files)}
    if partial:
        notes.append("columns not in every file, not used: " + ", ".join(
            f"'{c}' ({n} of {len(files)} files)" for c, n in sorted(partial.items())))
    return {name: df[common] for name, df in files.items()}


def _features(data: pd.DataFrame, candidates: list[str], target: str, task: str,
              notes: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Numeric and categorical features, and the columns dropped (identifiers, constants, leaks of the target)."""
    numeric, categorical, dropped, why = [], [], [], []
    y = pd.to_numeric(data[target], errors="coerce") if target in data.columns else None
    for c in candidates:
        col = data[c]
        n = col.nunique(dropna=True)
        if n <= 1:
            dropped.append(c)
            why.append(f"'{c}' (constant)")
        elif pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            numeric.append(c)
        elif n <= MAX_CATEGORIES:
            categorical.append(c)
        else:
            dropped.append(c)
            why.append(f"'{c}' (text with {n:,} distinct values: an identifier, not a category)")
    if y is not None and task == "regression":
        leaks = _leaks(data, numeric, y)
        for c, reason in leaks.items():
            numeric.remove(c)
            dropped.append(c)
            why.append(f"'{c}' ({reason})")
    notes.append(f"features: {len(numeric)} numeric ({', '.join(numeric) or 'none'}), {len(categorical)} "
                 f"categorical ({', '.join(categorical) or 'none'})")
    if why:
        notes.append("dropped (source.drop): " + ", ".join(why))
    if not numeric and not categorical:  # a series of the target alone: the calendar features carry the model
        notes.append("features: no column besides the time and the target; the model learns from the calendar "
                     "features alone (the hour, weekday and month of the time)")
    return numeric, categorical, dropped


def _clock_columns(data: pd.DataFrame, numeric: list[str], times: pd.Series, timezone: str,
                   notes: list[str]) -> list[str]:
    """Numeric features that are a function of the local month, weekday or hour of the time (a month number, a
    weekday code): like the cal_ features they move with the clock by design, and December's quantiles say
    nothing of January's, so they get no learned quantile rule (their ranges, nulls and types still hold)."""
    local = times.dt.tz_convert(timezone)
    parts = {"month": local.dt.month, "weekday": local.dt.dayofweek, "hour": local.dt.hour}
    out = []
    for c in numeric:
        col = pd.to_numeric(data[c], errors="coerce")
        if col.nunique() < 3:
            continue
        for name, part in parts.items():
            if part.nunique() >= 3 and col.groupby(part.to_numpy()).nunique().max() == 1:
                out.append(c)
                notes.append(f"'{c}' is a function of the {name} of the time: no learned quantile rule "
                             f"(validation.quantile_exempt; it moves with the clock, as the cal_ features do)")
                break
    return out


def _leaks(data: pd.DataFrame, numeric: list[str], y: pd.Series) -> dict[str, str]:
    """Columns that give the target away: nearly equal to it up to scale, or two that sum to it."""
    sample = data[numeric].apply(pd.to_numeric, errors="coerce")
    keep = y.notna()
    if len(sample) > 50_000:
        keep &= pd.Series(np.random.default_rng(0).random(len(sample)) < 50_000 / len(sample), index=sample.index)
    xs, ys = sample[keep], y[keep]
    out = {}
    for c in numeric:
        corr = xs[c].corr(ys)
        if corr is not None and not math.isnan(corr) and abs(corr) >= LEAK_CORRELATION:
            out[c] = f"correlation {corr:.2f} with the target: a leak"
    for i, a in enumerate(numeric):
        for b in numeric[i + 1:]:
            both = xs[a] + xs[b]
            if both.notna().mean() > 0.5 and (np.isclose(both, ys) | both.isna()).mean() > 0.99:
                for c in (a, b):
                    out[c] = f"'{a}' + '{b}' equals the target: a leak"
    for a in numeric:  # a recorded outcome minus its plan (e.g. actual - scheduled time) gives the target away
        for b in numeric:
            if a == b or a in out:
                continue
            diff = xs[a] - xs[b]
            known = diff.notna()
            if known.mean() > 0.5 and ys[known].abs().gt(0).mean() > 0.5 and \
                    (np.isclose(diff[known], ys[known]) & ys[known].ne(0)).mean() > 0.3:
                out[a] = f"'{a}' - '{b}' equals the target in most rows: a leak"
    return out


# ------------------------------------------------------------------------------------------------------- slices

def _slices(data: pd.DataFrame, times: pd.Series, numeric: list[str], categorical: list[str],
            notes: list[str]) -> tuple[dict, dict]:
    """Slice columns for the guardrails and the error plot; the bootstrap's resampling unit."""
    weeks = week_numbers(times).to_numpy()

    def balanced(c: str) -> float:
        """Entropy of the column's values within a typical week (a column constant within a week, such as the
        month, cannot tell a candidate's slices apart on one holdout week)."""
        if not 2 <= data[c].nunique() <= 30:
            return -1.0
        shares = data[c].astype(str).groupby(weeks).value_counts(normalize=True)
        return float((-(shares * np.log(shares))).groupby(level=0).sum().median())

    pool = [c for c in categorical if balanced(c) > 0.3]
    pool += [c for c in numeric if not c.startswith("cal_") and 2 <= data[c].nunique() <= 12 and balanced(c) > 0.3]
    slices = sorted(pool, key=balanced, reverse=True)[:2]
    if slices:
        notes.append(f"slices: {', '.join(slices)} (policy.slice_columns; evaluate.slice_column {slices[0]}): the "
                     f"most balanced columns with 2-30 values")
    else:
        notes.append("slices: none (no column with 2-30 values)")
    per_time = data.groupby(times.to_numpy()).size().median()
    if per_time >= 20:
        cluster = times.name
        notes.append(f"policy.cluster_column '{cluster}': {per_time:.0f} rows share each time, so the bootstrap "
                     f"resamples whole time stamps")
    else:
        cluster = None
        notes.append(f"policy.cluster_column none: {per_time:.0f} row(s) per time stamp, so the bootstrap resamples "
                     f"contiguous day-long blocks of an autocorrelated series (policy.block_hours)")
    return {"slice_column": slices[0] if slices else None}, {"cluster_column": cluster, "slice_columns": slices}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"
