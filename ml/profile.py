"""Profile a user's files and choose every setting of params.yaml for them, each with the reason in words.

Pure: frames in, a `Profile` out (the chosen sections as plain values + one note per choice). The command that
reads the files and writes params.yaml is `python -m flows.init`; rendering lives in `render_params`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from ml.config import SourceConfig, ValidationConfig
from ml.sources import calendar_columns, prepare_frame, synthesise_unit_id
from ml.validation import envelope_weeks

PART_NAMES = {"year": ("year", "yyyy", "yr"), "month": ("month", "mnth", "mon", "mm"),
              "day": ("day", "dd", "dom", "mday"), "hour": ("hour", "hr", "hh"), "minute": ("minute", "min")}
PART_RANGES = {"year": (1900, 2100), "month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59)}
MAX_CATEGORIES = 100  # text columns with more distinct values are identifiers or free text, not categories
MAX_CLASSES = 20  # a numeric target with at most this many values is a class label
LEAK_CORRELATION = 0.95  # a feature this correlated with the target is taken as a leak of it
FALSE_ALARM_RATE = 0.01  # a learned rule that would reject more ordinary weeks than this is relaxed
MIN_PRIOR_WEEKS = 2  # the gate learns rules once this many weeks precede a week (stages/ingest.py)
TRAIN_ROWS = 1000  # the training window should hold at least this many rows when the history allows
QUANTILE_TOLERANCE = 1.0  # validation.quantile_tolerance written for new data: seasonal weeks move by ~0.5 IQR
LABEL = re.compile(r"^\s*(?P<column>.+?)\s*>\s*(?P<value>-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


class ProfileError(ValueError):
    """The files cannot be profiled as asked; the message names the column or option."""


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
    frames = list(files.values())
    first = frames[0]
    columns = [str(c) for c in first.columns]
    for name, df in files.items():
        if [str(c) for c in df.columns] != columns and set(map(str, df.columns)) != set(columns):
            raise ProfileError(f"{name}: its columns differ from the first file's ({', '.join(columns)})")
    data = pd.concat(frames, ignore_index=True)

    target_col, label, task = _target(data, target, task, notes)
    time_col, parts = _time(data, time, notes)
    cfg = SourceConfig(kind="files", path=path, time_column=time_col, target=target_col, task=task,
                       numeric_features=(), categorical_features=(), time_parts=parts, timezone=timezone,
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
    sub_daily = bool((times.dt.tz_convert(timezone).dt.floor("D") != times.dt.tz_convert(timezone)).any())
    calendar = ["hour", "day_of_week", "month"] if sub_daily else ["day_of_week", "month"]
    for name, values in calendar_columns(times, tuple(calendar), timezone).items():
        derived[name] = values
    notes.append(f"calendar features {', '.join('cal_' + c for c in calendar)}: derived from '{time_col}' in "
                 f"{timezone} (source.calendar)")

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
    numeric += [f"cal_{c}" for c in calendar]

    weeks = _weeks(times)
    window = _window(weeks, notes)
    window["as_of"] = first_as_of(times, window.pop("_as_of_week"))
    src = {"kind": "files", "path": path, "time_column": time_col, "time_parts": parts or None,
           "timezone": timezone, "na_values": na_values, "target": target_col, "label": (
               {"column": label.column, "above": label.above} if label else None), "task": task,
           "unit_id": uid, "unit_id_from": uid_from or None, "calendar": calendar, "numeric_features": numeric,
           "categorical_features": categorical, "drop": dropped}
    validation = _validation(derived, src, weeks, window["train_weeks"], notes)
    evaluate, policy = _slices(derived, times, numeric, categorical, notes)
    name = model_name or _slug(f"{dataset}-{target_col}")
    notes.append(f"model name '{name}' (registry.model_name), from the data folder and the target")
    summary = {"rows": len(data), "files": len(files), "first": times.min(), "last": times.max(),
               "weeks": int(weeks.nunique()), "weekly_rows": int(weeks.value_counts().median())}
    return Profile(source=src, window=window, evaluate=evaluate, validation=validation, policy=policy,
                   registry={"model_name": name}, notes=notes, summary=summary)


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


# --------------------------------------------------------------------------------------------------------- time

def _time(data: pd.DataFrame, time: str | None, notes: list[str]) -> tuple[str, dict]:
    """The time column, or one composed from parts (date + hour, or year/month/day[/hour])."""
    if time:
        if time not in data.columns:
            raise ProfileError(f"--time: no column '{time}' in the files; columns: {', '.join(map(str, data.columns))}")
        return _maybe_hour(data, time, notes)
    found = [c for c in data.columns if _looks_like_time(data[c])]
    if found:
        best = max(found, key=lambda c: data[c].nunique())
        return _maybe_hour(data, best, notes)
    parts = _time_parts(data)
    if {"year", "month", "day"} <= set(parts):
        name = "time" if "time" not in data.columns else "event_time"
        notes.append(f"time '{name}': composed from {', '.join(f'{k}={v}' for k, v in parts.items())} "
                     f"(source.time_parts)")
        return name, parts
    raise ProfileError("no time column found: name it with --time (a column of dates or times), or give the files "
                       "columns for year, month and day")


def _looks_like_time(col: pd.Series) -> bool:
    """Dates or times as text (ISO, or month/day/year) or a datetime column; epoch numbers need --time."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    if pd.api.types.is_numeric_dtype(col) or col.dropna().empty:
        return False
    sample = col.dropna().astype(str).head(200)
    if not sample.str.contains(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}", regex=True).all():
        return False
    return bool(pd.to_datetime(sample, errors="coerce", format="mixed").notna().mean() > 0.99)


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


def _maybe_hour(data: pd.DataFrame, time: str, notes: list[str]) -> tuple[str, dict]:
    """A date-only time column plus an hour column (0..23) make an hourly time."""
    t = pd.to_datetime(data[time].dropna().astype(str).head(5000), errors="coerce", format="mixed")
    parts = _time_parts(data)
    if (t.dt.normalize() == t).all() and "hour" in parts:
        name = "time" if "time" not in data.columns else "event_time"
        notes.append(f"time '{name}': the dates in '{time}' plus the hour in '{parts['hour']}' "
                     f"(source.time_parts); '{time}' alone is only a day")
        return name, {"date": time, "hour": parts["hour"]}
    notes.append(f"time column '{time}' ({'given' if time else 'the column of dates'}; naive times taken in the "
                 f"time zone below)")
    return time, {}


def _weeks(times: pd.Series) -> pd.Series:
    """Week number of each row, weeks running Monday 00:00 .. Sunday (UTC), counted from the first."""
    anchor = _monday_on_or_before(times.min())
    return np.floor((times - anchor) / pd.Timedelta(days=7)).astype(int)


def _monday_on_or_before(t: pd.Timestamp) -> pd.Timestamp:
    day = t.tz_convert("UTC").normalize()
    return day - pd.Timedelta(days=day.dayofweek)


def _window(weeks: pd.Series, notes: list[str]) -> dict:
    """Training weeks that fit the history, and the first week with a full window before it."""
    counts = weeks.value_counts().sort_index()
    full = counts[counts >= 0.5 * counts.median()]
    n = int(full.index.max() - full.index.min() + 1) if len(full) else 0
    if n < 3:
        raise ProfileError(f"the files span {n} full week(s): a weekly pipeline needs at least 3 (training weeks + "
                           f"the newest week)")
    weekly = float(full.median())
    # 8 weeks keep a model fresh; a thin feed (a row a day) needs more weeks for TRAIN_ROWS rows, up to a third
    # of the history so that most weeks remain to run on
    wanted = max(8, math.ceil(TRAIN_ROWS / weekly))
    train_weeks = min(wanted, max(2, n // 3))
    first_full = int(full.index.min())
    as_of_week = first_full + train_weeks  # the newest week's number; its as_of is the Monday after it
    why = (f"{weekly:,.0f} rows a week, so {train_weeks} weeks make ~{train_weeks * weekly:,.0f} training rows"
           if wanted > 8 else f"{n} weeks of history")
    notes.append(f"window: {train_weeks} training weeks + the newest week ({why}); {n - train_weeks - 1} weekly "
                 f"runs can follow the first")
    return {"train_weeks": train_weeks, "_as_of_week": as_of_week}


def first_as_of(times: pd.Series, as_of_week: int) -> date:
    """window.as_of (the Monday after the newest week) for week number `as_of_week` of `_weeks`."""
    start = _monday_on_or_before(times.min())
    return (start + pd.Timedelta(days=7 * (as_of_week + 1))).date()


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
    """An integer column that counts rows 1, 2, 3 ... (or from 0) in every file: it carries no information."""
    for df in files.values():
        if column not in df.columns or not pd.api.types.is_integer_dtype(df[column]):
            return False
        v = df[column].to_numpy()
        if len(v) < 2 or not (np.diff(v) == 1).all() or v[0] not in (0, 1):
            return False
    return True


# ----------------------------------------------------------------------------------------------------- features

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
    if not numeric and not categorical:
        raise ProfileError("no usable feature columns are left")
    return numeric, categorical, dropped


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


# --------------------------------------------------------------------------------------------------- validation

def _validation(data: pd.DataFrame, src: dict, weeks: pd.Series, train_weeks: int, notes: list[str]) -> dict:
    """The data contract learned from the history, relaxed where a rule would reject ordinary weeks."""
    defaults = ValidationConfig(quantile_tolerance=QUANTILE_TOLERANCE)
    counts = weeks.value_counts()
    median_rows = float(counts.median())
    min_rows = max(1, int(0.25 * median_rows))
    short = int((counts < min_rows).sum())
    notes.append(f"validation.min_rows {min_rows:,}: a quarter of the median week ({median_rows:,.0f} rows); "
                 f"{short} short week(s) of the history fall below it and are left out when landed")
    features = [*src["numeric_features"], *src["categorical_features"]]
    target = src["target"]
    required = [c for c in features if not c.startswith("cal_") and data[c].notna().all()]
    if data[target].notna().all():
        required.insert(0, target)
    notes.append(f"validation.required: {', '.join(required) or 'none'} (never null in {len(data):,} rows)")
    numeric = [c for c in src["numeric_features"] if not c.startswith("cal_")]
    if src["task"] == "regression":
        numeric.append(target)
    ranges = {c: _range(data[c]) for c in numeric if pd.to_numeric(data[c], errors="coerce").notna().any()}
    ranges = {c: r for c, r in ranges.items() if r is not None}
    full = counts.index[counts >= min_rows]
    mask = weeks.isin(full)
    null_fail = {c: _null_false_alarms(data[c][mask], weeks[mask], train_weeks, defaults.null_tolerance)
                 for c in [*features, target] if c not in required and not c.startswith("cal_")}
    null_exempt = [c for c, rate in null_fail.items() if rate > FALSE_ALARM_RATE]
    for c in null_exempt:
        notes.append(f"validation.null_exempt '{c}': its null share moves by more than "
                     f"{defaults.null_tolerance:.0%} points in {null_fail[c]:.0%} of ordinary weeks")
    q_fail = {c: _quantile_false_alarms(data[c][mask], weeks[mask], train_weeks, defaults, c == target)
              for c in numeric}
    quantile_exempt = [c for c, rate in q_fail.items() if rate > FALSE_ALARM_RATE]
    for c in quantile_exempt:
        notes.append(f"validation.quantile_exempt '{c}': its weekly quantiles left the learned range in "
                     f"{q_fail[c]:.0%} of ordinary weeks (drift, not a broken contract)")
    checked = [c for c in numeric if c not in quantile_exempt]
    notes.append(f"validation: ranges for {len(ranges)} numeric column(s) from the history's robust spread; "
                 f"learned quantile checks on {len(checked)} ({', '.join(checked) or 'none'})")
    return {"min_rows": min_rows, "required": required, "null_exempt": null_exempt, "ranges": ranges,
            "quantile_exempt": quantile_exempt, "_false_alarms": {"null": null_fail, "quantile": q_fail}}


def _range(col: pd.Series) -> list | None:
    """[min, max] a value may take: the history's extremes widened by a quarter of its robust (1%..99%) spread;
    never below 0 for a column that never was (a sign flip is a broken feed)."""
    v = pd.to_numeric(col, errors="coerce")
    v = v[np.isfinite(v)]
    if v.empty:
        return None
    q01, q99 = v.quantile([0.01, 0.99])
    spread = max(float(q99 - q01), float(v.max() - v.min()) * 0.01, 1e-9)
    lo, hi = float(v.min()) - 0.25 * spread, float(v.max()) + 0.25 * spread
    if v.min() >= 0:
        lo = max(lo, 0.0)
    integral = bool((v == v.round()).all())
    return [_round(lo, integral, math.floor), _round(hi, integral, math.ceil)]


def _round(x: float, integral: bool, how) -> float | int:
    if integral:
        return int(how(x))
    if x == 0:
        return 0
    digits = max(0, 3 - int(math.floor(math.log10(abs(x)))))
    return round(x, digits)


def _null_false_alarms(col: pd.Series, weeks: pd.Series, train_weeks: int, tolerance: float) -> float:
    """Share of history weeks whose null share exceeds the previous weeks' share + tolerance."""
    share = col.isna().groupby(weeks.to_numpy()).agg(["sum", "size"])
    fails = total = 0
    idx = list(share.index)
    for i in range(MIN_PRIOR_WEEKS, len(idx)):  # the gate judges a week once two weeks precede it
        ref = share.iloc[max(0, i - train_weeks):i]
        allowed = ref["sum"].sum() / ref["size"].sum() + tolerance
        if allowed >= 1:
            continue
        total += 1
        fails += share.iloc[i]["sum"] / share.iloc[i]["size"] > allowed
    return fails / total if total else 0.0


def _quantile_false_alarms(col: pd.Series, weeks: pd.Series, train_weeks: int, cfg: ValidationConfig,
                           target: bool) -> float:
    """Share of history weeks whose quantiles leave the range the validation would learn from the weeks before."""
    v = pd.to_numeric(col, errors="coerce")
    keep = v.notna().to_numpy()
    v, w = v[keep].to_numpy(), weeks.to_numpy()[keep]
    qs = [0.5] if target else list(cfg.quantiles)
    ids = np.unique(w)
    per_week = {i: np.quantile(v[w == i], qs, method="nearest") for i in ids}
    fails = total = 0
    for k in range(MIN_PRIOR_WEEKS, len(ids)):  # the first window is landed against shorter references too
        ref_ids = ids[max(0, k - train_weeks):k]
        ref = v[np.isin(w, ref_ids)]
        if ref.size == 0:
            continue
        iqr = float(np.quantile(ref, 0.75) - np.quantile(ref, 0.25))
        sizes = pd.Series(w[np.isin(w, ref_ids)]).value_counts()
        spans = [i for i in ref_ids if i in set(envelope_weeks(sizes))]
        weekly = np.array([per_week[i] for i in spans] + [np.quantile(ref, qs, method="nearest")])
        lo = weekly.min(axis=0) - cfg.quantile_tolerance * iqr
        hi = weekly.max(axis=0) + cfg.quantile_tolerance * iqr
        if iqr == 0 and np.array_equal(lo, hi):
            continue  # the gate has no quantile rule for a column constant in its reference
        total += 1
        fails += bool(((per_week[ids[k]] < lo) | (per_week[ids[k]] > hi)).any())
    return fails / total if total else 0.0


# ------------------------------------------------------------------------------------------------------- slices

def _slices(data: pd.DataFrame, times: pd.Series, numeric: list[str], categorical: list[str],
            notes: list[str]) -> tuple[dict, dict]:
    """Slice columns for the guardrails and the error plot; the bootstrap's resampling unit."""
    weeks = _weeks(times).to_numpy()

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


def week_span(as_of: date) -> str:
    return f"{as_of - timedelta(days=7)}..{as_of - timedelta(days=1)}"


# ------------------------------------------------------------------------------------------------------- render

def _y(value) -> str:
    """A value in YAML flow style on one line."""
    import yaml

    if isinstance(value, date):
        return f'"{value.isoformat()}"'
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip().removesuffix("\n...")


def render_params(p: Profile, template: str) -> str:
    """params.yaml for the profile: the chosen sections, each key commented, and the other sections (train,
    drift, ab) as in `template` (the project's own params.yaml), so every step keeps its documented defaults."""
    s, w, v, pol = p.source, p.window, p.validation, p.policy
    m = p.summary
    where = "relative to this file" if not str(s["path"]).startswith("/") else "absolute path"
    sections = {
        "source": ("where weekly batches come from (read by land and prepare)", [
            ("kind", "files", "a folder or glob of CSV/Parquet files"),
            ("path", s["path"], where),
            ("time_column", s["time_column"], "composed from time_parts" if s["time_parts"] else "UTC weeks"),
            ("time_parts", s["time_parts"], "columns holding the parts of the time (null: time_column is one)"),
            ("timezone", s["timezone"], "zone of naive times in the files; batches are UTC weeks"),
            ("na_values", s["na_values"], "CSV text read as missing (null: pandas' defaults)"),
            ("target", s["target"], "what the model predicts"),
            ("label", s["label"], "{column, above}: target = 1 where column > above (null: a column)"),
            ("task", s["task"], "regression | classification"),
            ("unit_id", s["unit_id"], "identifies one row (duplicate check, A/B routing)"),
            ("unit_id_from", s["unit_id_from"], "unit_id joined from these columns (null: unit_id is a column)"),
            ("calendar", s["calendar"], "derived numeric features cal_<name> from the time, in `timezone`"),
            ("numeric_features", s["numeric_features"], None),
            ("categorical_features", s["categorical_features"], None),
            ("drop", s["drop"], "never features (identifiers, constants, leaks of the target)")]),
        "window": ("read by land and prepare", [
            ("as_of", w["as_of"], "newest week = the 7 days before this date; the weekly flow moves it on"),
            ("train_weeks", w["train_weeks"], "training window = the weeks before the newest one")]),
        "evaluate": ("read by evaluate", [
            ("slice_column", p.evaluate["slice_column"], "error-by-slice plot"),
            ("plot_rows", 2000, None)]),
        "validation": ("the data contract of a new batch (Great Expectations), learned from the history", [
            ("min_rows", v["min_rows"], "floor of rows in a week (shorter weeks are left out of training)"),
            ("row_count_tolerance", 0.5, "learned: rows within the reference weeks' [min x 0.5, max x 1.5]"),
            ("required", v["required"], "never null (time and unit id always)"),
            ("null_tolerance", 0.05, "learned: other columns' null share <= reference share + 5 points"),
            ("null_exempt", v["null_exempt"], "null share too variable week to week for that check"),
            ("ranges", v["ranges"], "fixed: [min, max] from the history's robust spread"),
            ("category_tolerance", 0.02, "learned: <= 2% of rows outside the reference's categories"),
            ("quantiles", [0.25, 0.5, 0.75], None),
            ("quantile_tolerance", QUANTILE_TOLERANCE, "learned: within the reference weeks' range +- this x IQR"),
            ("quantile_exempt", v["quantile_exempt"], "weekly quantiles too variable: their shifts are drift")]),
    }
    m = p.summary
    head = (f"# Written by `python -m flows.init` from {s['path']}\n# ({m['rows']:,} rows in {m['files']} file(s), "
            f"{m['first']:%Y-%m-%d} .. {m['last']:%Y-%m-%d}, {m['weeks']} weeks of ~{m['weekly_rows']:,} rows).\n"
            "# One section per pipeline step. `dvc repro` reruns exactly the stages whose keys changed. "
            "Edit freely.\n\n")
    for name, (comment, keys) in sections.items():
        head += f"{name + ':':<28} # {comment}\n"
        for key, value, note in keys:
            line = f"  {key}: {_y(value)}"
            if note and len(line) > 40:  # a long value: its comment goes on the line above
                head += f"  # {note}\n{line}\n"
            else:
                head += (f"{line:<28} # {note}" if note else line).rstrip() + "\n"  # a space before '#' always
        head += "\n"
    tail = _template_sections(template, ("train", "drift"))
    policy = _template_sections(template, ("policy",))
    policy = _set_line(policy, "cluster_column", _y(pol["cluster_column"]),
                       "resampling unit of the bootstrap (null: day-long time blocks, block_hours)")
    policy = _set_line(policy, "slice_columns", _y(pol["slice_columns"]), "guardrails: no slice much worse")
    registry = f"""registry:
  model_name: {_y(p.registry['model_name'])}
  experiment: weekly-retrain

"""
    ab = _template_sections(template, ("ab",))
    return head + tail + policy + registry + ab


def _template_sections(template: str, names: tuple[str, ...]) -> str:
    """The text of top-level sections `names` of a params.yaml, comments included."""
    out, keep = [], False
    for line in template.splitlines(keepends=True):
        if line and not line[0].isspace() and not line.startswith("#"):
            keep = line.split(":", 1)[0] in names
        if keep:
            out.append(line)
    text = "".join(out)
    return text if text.endswith("\n\n") else text.rstrip("\n") + "\n\n"


def _set_line(section: str, key: str, value: str, comment: str) -> str:
    lines = section.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{key}:"):
            indent = line[:len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{key}: {value}   # {comment}\n"
            break
    return "".join(lines)
