"""The data contract `cli.init` writes for a user's files (`ml.profile`): value ranges from the history's spread,
the rows a week needs, and the learned rules replayed over the history and calibrated on it (`ml.budget`).

Each week the pipeline then follows the accepted weeks from there (`ml.contract`), with `range_room` and
`round_bound` as here. Pure: frames in, the params' validation section (plain values, with notes) out.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ml.budget import calibrate, replay_contract
from ml.config import ValidationConfig

QUANTILE_TOLERANCE = 1.0  # validation.quantile_tolerance written for new data: seasonal weeks move by ~0.5 IQR
RANGE_MARGIN = 0.25  # ranges: the history's extremes (later the accepted weeks') +- this share of their spread
# validation.range_tolerance written for new data: 0, every row within its range. Letting 0.12-0.5 % of rows past
# took Beijing's out-of-sample quarantines from 14 to 11 of 156 weeks but caught 6-7 fewer feature x1.6 and 3 fewer
# target + 1 sd breaks (docs/contract-and-alarms.md)
RANGE_TOLERANCE = 0.0
TARGET_RANGE_MARGIN = 1.0  # the target's: its tails follow the news of the week (a record month of a growing
#                            feed); its location is held by the median rule, its range is there for garbage


def first_contract(data: pd.DataFrame, src: dict, weeks: pd.Series, train_weeks: int, notes: list[str],
                clock: list[str] = ()) -> dict:
    """The data contract learned from the history, calibrated so that its learned rules together would have
    rejected at most FALSE_ALARM_RATE of the history's ordinary weeks."""
    defaults = ValidationConfig(quantile_tolerance=QUANTILE_TOLERANCE)
    counts = weeks.value_counts()
    median_rows = float(counts.median())
    min_rows = max(1, int(0.25 * median_rows))
    short = int((counts < min_rows).sum())
    notes.append(f"validation.min_rows {min_rows:,}: a quarter of the median week ({median_rows:,.0f} rows); "
                 f"{short} short week(s) of the history fall below it and are left out when landed")
    features = [*src["numeric_features"], *src["categorical_features"]]
    target = src["target"]
    # never null, fixed: the target and the columns that name a row (unit id parts, categories) when the history
    # never lacked them. A numeric measurement the model imputes gets the learned null-share rule instead: a
    # sensor never out in the history goes out one day (Beijing's RAIN, a year on), and a week with a few gaps is
    # an ordinary week; a column empty all week is still rejected
    keys = [*(src.get("unit_id_from") or ()), *src["categorical_features"]]
    required = [c for c in dict.fromkeys([target, *keys]) if c in data.columns and c != src["time_column"]
                and data[c].notna().all()]
    notes.append(f"validation.required: {', '.join(required) or 'none'} (never null in {len(data):,} rows; numeric "
                 f"features get a learned null-share rule)")
    numeric = [c for c in src["numeric_features"] if not c.startswith("cal_")]
    if src["task"] == "regression":
        numeric.append(target)
    ranges = {c: _range(data[c], target) for c in numeric if pd.to_numeric(data[c], errors="coerce").notna().any()}
    ranges = {c: r for c, r in ranges.items() if r is not None}
    full = counts.index[counts >= min_rows]
    mask = weeks.isin(full)
    rules = {"nulls": [c for c in [*features, target] if c not in required and not c.startswith("cal_")],
             "categories": [*src["categorical_features"], *([target] if src["task"] == "classification" else [])],
             "quantiles": [c for c in numeric if c not in clock]}
    relations = {"inputs": numeric, "time_column": src["time_column"], "timezone": src.get("timezone", "UTC")}
    need = replay_contract(data[mask], weeks[mask], rules, train_weeks, defaults, target=target, companion=relations)
    cal = calibrate(need, defaults, protect=(("quantiles", target),))
    notes.extend(cal.notes)
    quantile_exempt = sorted({*cal.quantile_exempt, *clock})
    checked = [c for c in numeric if c not in quantile_exempt]
    notes.append(f"validation: ranges for {len(ranges)} numeric column(s) from the history's robust spread (each "
                 f"week they widen with the accepted weeks, validation.learn_ranges); learned quantile checks on "
                 f"{len(checked)} ({', '.join(checked) or 'none'})")
    return {"min_rows": min_rows, "required": required, "null_exempt": cal.null_exempt, "ranges": ranges,
            "quantile_exempt": quantile_exempt, "row_count_tolerance": cal.row_count_tolerance,
            "null_tolerance": cal.null_tolerance, "column_tolerances": cal.column_tolerances, "_replay": need,
            "_calibration": cal}


def _range(col: pd.Series, target: str) -> list | None:
    """[min, max] a value may take: the history's extremes widened by `range_room`; never below 0 for a column
    that never was (a sign flip is a broken feed)."""
    v = pd.to_numeric(col, errors="coerce")
    v = v[np.isfinite(v)]
    if v.empty:
        return None
    room = range_room(v.to_numpy(dtype=float), str(col.name), target)
    lo, hi = float(v.min()) - room, float(v.max()) + room
    if v.min() >= 0:
        lo = max(lo, 0.0)
    integral = bool((v == v.round()).all())
    return [round_bound(lo, math.floor, integral), round_bound(hi, math.ceil, integral)]


def range_room(values: np.ndarray, column: str, target: str | None) -> float:
    """How far a column's range reaches beyond its extremes: RANGE_MARGIN (the target: TARGET_RANGE_MARGIN) of
    its robust (1%..99%) spread. At onboarding (the history) and each week (the accepted weeks, ml/contract.py)."""
    q01, q99 = np.quantile(values, [0.01, 0.99])
    spread = max(float(q99 - q01), float(values.max() - values.min()) * 0.01, 1e-9)
    return (TARGET_RANGE_MARGIN if column == target else RANGE_MARGIN) * spread


def round_bound(x: float, how, integral: bool = False) -> float | int:
    """A range bound to 4 significant digits, rounded away from the data (`how`: math.floor for a low bound,
    math.ceil for a high one), an integer where the column or the result is one."""
    if integral:
        return int(how(x))
    if x == 0 or not math.isfinite(x):
        return 0 if x == 0 else x
    scale = 10 ** max(0, 3 - int(math.floor(math.log10(abs(x)))))
    y = how(x * scale) / scale
    return int(y) if float(y).is_integer() else y
