"""The contract `cli.init` learns is calibrated family-wise: the replay of its learned rules over the history
(`ml.budget.replay_contract`) says which week each rule would reject, agrees with the gate that Great
Expectations runs, and `calibrate` widens (or exempts) rules until together they reject at most 1 % of the
history's weeks."""
from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ml import budget as B
from ml import first_contract as FC
from ml import profile as P
from ml import render as R
from ml import timeline as T
from ml.config import ConfigError, ValidationConfig, parse_params
from ml.sources import load_source, read_table
from ml.split import slice_week, training_weeks, week_bounds
from ml.suite import build_suite
from ml.validation import validate_batch

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets"
# bike sharing by day (hour.csv's default tolerances already reject <= 1 % of its weeks: nothing to calibrate):
# every column numeric and never null; one Beijing station: nulls in most columns, wind direction
# as a category, a regression target with gaps
CASES = {
    "bike": (SHARED / "bike_sharing" / "day.csv", {"target": "cnt"}),
    "station": (SHARED / "beijing_air" / "PRSA_Data_Dongsi_20130301-20170228.csv",
                {"target": "PM2.5", "timezone": "Asia/Shanghai"}),
}
DEFAULTS = ValidationConfig(quantile_tolerance=FC.QUANTILE_TOLERANCE)


@pytest.fixture(scope="module", params=list(CASES))
def onboarded(request):
    """The profile of a real file, its params as written, and the source as the pipeline loads it."""
    path, kw = CASES[request.param]
    if not path.exists():
        pytest.fail(f"{path} is missing: the shared datasets folder must sit beside the project")
    prof = P.profile({path.name: read_table(path, None)}, path=str(path), **kw)
    raw = yaml.safe_load(R.render_params(prof, (ROOT / "params.yaml").read_text()))
    params = parse_params(copy.deepcopy(raw))
    return request.param, prof, params, load_source(params.source, ROOT), raw


def test_the_rules_together_reject_at_most_the_budget(onboarded):
    name, prof, params, _, _ = onboarded
    cal = prof.validation["_calibration"]
    assert cal.default_rate > B.FALSE_ALARM_RATE, f"{name}: nothing to calibrate"  # the per-rule defaults do not
    need = prof.validation["_replay"]
    rejected = cal.alarms[cal.alarms].index
    # beyond the budget only weeks no tolerance lets through: a feed empty all week (every reference week had
    # values), which the gate must reject
    nulls = [r for r in need.columns if r[0] == "nulls"]
    broken = [k for k in rejected if np.isinf(need.loc[k, nulls].to_numpy(dtype=float)).any()]
    assert len(rejected) - len(broken) <= int(B.FALSE_ALARM_RATE * len(need))
    assert cal.rate <= B.FALSE_ALARM_RATE or len(broken) > 0
    assert any(f"budget {B.FALSE_ALARM_RATE:.0%}" in n for n in prof.notes)
    # the params as written reproduce the calibrated alarms: nothing is lost in rendering
    written = _tolerances(params.validation, need.columns)
    assert B.alarms(need, written).any(axis=1).equals(cal.alarms)


CLOCK = {"bike": {"mnth", "weekday"}, "station": set()}  # features that are a function of the month/weekday/hour


def test_features_that_move_with_the_clock_get_no_quantile_rule(onboarded):
    """A month number or weekday code among the features moves with the calendar as the cal_ features do:
    December's quantiles say nothing of January's. cli.init exempts them from the learned quantile rule, says
    so, and keeps their ranges; a feature that only follows the season loosely (bike's 'season') keeps its rule."""
    name, prof, params, _, _ = onboarded
    v = params.validation
    clock = {c for c in params.source.numeric_features if any(f"'{c}' is a function of the" in n for n in prof.notes)}
    assert clock == CLOCK[name]
    assert clock <= set(v.quantile_exempt) and clock <= set(v.ranges)
    if name == "bike":
        assert "season" not in v.quantile_exempt


def test_the_target_range_leaves_room_for_a_record_week(onboarded):
    """The target's range is its history's extremes +- its whole robust spread (a record month of a growing
    feed), the features' +- a quarter of theirs."""
    name, prof, params, frame, _ = onboarded
    lo, hi = params.validation.ranges[params.source.target]
    y = frame[params.source.target].dropna()
    spread = float(y.quantile(0.99) - y.quantile(0.01))
    assert hi >= y.max() + FC.TARGET_RANGE_MARGIN * spread * 0.99 and lo == 0
    measured = [c for c in params.validation.ranges if c != params.source.target and frame[c].nunique() > 12]
    assert measured
    for c in measured:  # a quarter of their spread, well short of the target's whole one
        x = frame[c].dropna()
        room = float(x.quantile(0.99) - x.quantile(0.01))
        assert x.max() + FC.RANGE_MARGIN * room * 0.99 <= params.validation.ranges[c][1] < x.max() + 0.5 * room, c


def test_a_numeric_feature_never_null_in_the_history_may_have_a_few_gaps_later(onboarded):
    """`required` (never null, fixed) holds the target and the columns that name a row; a numeric measurement never
    missing in the history gets the learned null-share rule (a few gaps are no break), and an empty week still
    fails."""
    name, _, params, frame, _ = onboarded
    src, v = params.source, params.validation
    numeric = [c for c in src.numeric_features if not c.startswith("cal_")]
    assert not set(v.required) & set(numeric)
    if name != "bike":
        return
    assert v.required == ("cnt",)
    as_of = params.window.as_of
    reference = pd.concat([slice_week(frame, src.time_column, w) for w in training_weeks(as_of, 8)])
    start, end = week_bounds(as_of)
    suite = build_suite(src, v, reference, start, end, 8)
    week = slice_week(frame, src.time_column, as_of)
    hum = [e.kwargs for e in suite if e.type == "ExpectColumnValuesToNotBeNull" and e.column == "hum"]
    assert hum and all("mostly" in k and k["mostly"] < 1 for k in hum)  # a share of nulls, not never-null
    empty = validate_batch(week.assign(hum=np.nan), suite)
    assert not empty.success and any("'hum' is null in every row" in f for f in empty.failures)


def test_widened_rules_stop_at_their_own_replayed_variation(onboarded):
    """A widened tolerance lets through the weeks it was widened for, and reaches no further than one step beyond
    them or, where the tail of its weeks puts the next extreme further out, one step beyond that."""
    name, prof, params, _, _ = onboarded
    need = prof.validation["_replay"]
    reached = prof.validation["_calibration"].reached
    v = params.validation
    assert v.column_tolerances, f"{name}: no rule was widened"
    for column, tols in v.column_tolerances.items():
        for family, tol in tols.items():
            base = B.defaults_of(DEFAULTS)[family]
            x = need[(family, column)].to_numpy()
            x = x[np.isfinite(x)]
            if (family, column) in reached:
                assert tol == reached[(family, column)] > x.max(), (column, family, tol)
                continue
            assert base < tol <= x.max() + B.STEP[family] + 1e-9, (column, family, tol)
            assert (x > base).any()  # widened because the history needed it


def test_the_replay_agrees_with_the_gate(onboarded):
    """Week by week, a learned rule fails in Great Expectations exactly when the replay says its default
    tolerance is too small: on every week some rule rejects, and on ordinary weeks between them."""
    name, prof, params, frame, _ = onboarded
    need = prof.validation["_replay"]
    src, n = params.source, params.window.train_weeks
    default = dataclasses.replace(params.validation, row_count_tolerance=DEFAULTS.row_count_tolerance,
                                  null_exempt=(), quantile_exempt=(), column_tolerances={})
    fires = B.alarms(need, _tolerances(default, need.columns))
    rejected = list(need.index[fires.any(axis=1)])[:6]
    quiet = list(need.index[~fires.any(axis=1)][:: max(1, len(need) // 2)])
    anchor = T._monday_on_or_before(frame[src.time_column].min())
    short = frame.groupby(T.week_numbers(frame[src.time_column])).size() < params.validation.min_rows
    for k in rejected + quiet:
        as_of = (anchor + pd.Timedelta(days=7 * (k + 1))).date()
        refs = [w for w in training_weeks(as_of, n) if not short.get(_week_no(anchor, w), True)]
        reference = pd.concat([slice_week(frame, src.time_column, w) for w in refs], ignore_index=True)
        start, end = week_bounds(as_of)
        report = validate_batch(slice_week(frame, src.time_column, as_of),
                                build_suite(src, default, reference, start, end, n))
        # a quantile rule whose column moved with the others (its companion) lets the week through, as the replay
        failed = {_rule(d) for d in report.result["expectations"] if not d["success"] and "excused" not in d}
        expected = {r for r in need.columns if fires.at[k, r]}
        assert failed == expected, f"{name} week {as_of}: GX {sorted(failed)}, replay {sorted(expected)}"
    assert rejected  # the defaults reject some real weeks: the agreement was tested where it matters


def _week_no(anchor: pd.Timestamp, as_of) -> int:
    return int((pd.Timestamp(as_of, tz="UTC") - anchor) / pd.Timedelta(days=7)) - 1


def _rule(d: dict) -> tuple[str, str]:
    kind, kwargs = d["expectation_type"], d["kwargs"]
    family = {"expect_column_quantile_values_to_be_between": "quantiles",
              "expect_column_values_to_be_in_set": "categories",
              "expect_column_proportion_of_non_null_values_to_be_between": "nulls",
              "expect_column_values_to_not_be_null": "nulls" if "mostly" in kwargs else "fixed",
              "expect_table_row_count_to_be_between": "rows" if "max_value" in kwargs else "fixed"}.get(kind, "fixed")
    return (family, "" if family == "rows" else kwargs.get("column", ""))


def _tolerances(v: ValidationConfig, rules) -> dict:
    """Each replayed rule's tolerance under validation config `v` (exempt: no finite need fails)."""
    out = {}
    for family, column in rules:
        if family == "rows":
            out[(family, column)] = v.row_count_tolerance
        elif family == "quantiles" and column in v.quantile_exempt:
            out[(family, column)] = np.inf
        elif family == "nulls" and column in v.null_exempt:
            out[(family, column)] = 1.0  # still must have values
        else:
            base = {"nulls": v.null_tolerance, "categories": v.category_tolerance,
                    "quantiles": v.quantile_tolerance}[family]
            out[(family, column)] = v.column_tolerances.get(column, {}).get(family, base)
    return out


# ------------------------------------------------------------------------------------- calibrate, by hand

def need_table(columns: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    frame = pd.DataFrame(columns, dtype=float)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["family", "column"])
    return frame


def quiet(n: int, value: float = 0.0) -> list[float]:
    return [value] * n


def test_the_cheapest_weeks_are_let_through_and_the_most_extreme_kept():
    # 100 weeks, budget 1 %: one week may stay rejected. Three weeks fail their rule's default.
    a, b = quiet(100), quiet(100)
    a[10], a[20] = 1.3, 4.0  # quantiles of 'a' 1.3 and 4 IQR outside the envelope
    b[30] = 0.08  # 'b' null share 8 points above the reference's (default tolerance 5)
    cal = B.calibrate(need_table({("quantiles", "a"): a, ("nulls", "b"): b, B.ROW_RULE: quiet(100)}), DEFAULTS)
    # relative widening: 'a' to 1.3 IQR (x1.3) is cheaper than 'a' to 4 IQR (x4); 'b''s rise of 8 points is the
    # feed's outage record, which every null-share rule allows
    assert cal.column_tolerances == {"a": {"quantiles": 1.4}} and cal.null_tolerance == 0.09
    assert list(cal.alarms[cal.alarms].index) == [20] and cal.rate == 0.01
    assert cal.default_rate == 0.03


def test_a_partial_outage_of_one_column_lets_every_column_go_as_dark():
    # 'co' lost 12 points of its values one week; 'no2' never did. A week where 'no2' loses 10 points is the same
    # kind of week (a sensor out), so the contract allows it; a column empty all week is still rejected.
    co, no2 = quiet(100), quiet(100)
    co[40] = 0.12
    no2[70] = np.inf
    cal = B.calibrate(need_table({("nulls", "co"): co, ("nulls", "no2"): no2}), DEFAULTS)
    assert cal.null_tolerance == 0.13 and cal.column_tolerances == {}
    assert list(cal.alarms[cal.alarms].index) == [70]
    assert any("null_tolerance 0.13" in n and "'co' +12 points in a week" in n for n in cal.notes), cal.notes
    assert B.calibrate(need_table({("nulls", "co"): quiet(100)}), DEFAULTS).null_tolerance == DEFAULTS.null_tolerance
    # a column whose nulls carry meaning (null_exempt: "no gust") sets no record for the others
    gust = dataclasses.replace(DEFAULTS, null_exempt=("co",))
    assert B.calibrate(need_table({("nulls", "co"): co, ("nulls", "no2"): quiet(100)}), gust).null_tolerance == 0.05


def test_a_week_no_tolerance_lets_through_counts_against_the_budget():
    nulls, q = quiet(100), quiet(100)
    nulls[5] = np.inf  # a feed empty all week: its has-values rule holds whatever the tolerance
    q[50] = 1.5
    cal = B.calibrate(need_table({("nulls", "x"): nulls, ("quantiles", "y"): q}), DEFAULTS)
    assert cal.column_tolerances == {"y": {"quantiles": 1.6}}  # the one week allowed is the empty feed
    assert list(cal.alarms[cal.alarms].index) == [5]


def test_a_rule_beyond_its_cap_is_exempted_not_widened():
    q, n, step = quiet(50), quiet(50), quiet(50)  # 50 weeks: the budget allows none to stay rejected
    q[1], q[2] = B.MAX_QUANTILE_TOLERANCE + 2, 1.2
    n[3], n[4] = B.MAX_NULL_TOLERANCE + 0.1, 0.07
    step[6] = np.inf  # a column of few values stepping to a new one while its reference IQR is 0
    cal = B.calibrate(need_table({("quantiles", "q"): q, ("nulls", "n"): n, ("quantiles", "step"): step}),
                      DEFAULTS)
    assert cal.quantile_exempt == ["q", "step"] and cal.null_exempt == ["n"]
    assert "q" not in cal.column_tolerances and "n" not in cal.column_tolerances
    assert cal.rate == 0.0
    assert any("validation.quantile_exempt 'q': no tolerance up to" in note for note in cal.notes)


def test_the_row_count_tolerance_is_widened_like_any_rule():
    rows = quiet(100)
    rows[7], rows[8], rows[9] = 0.6, 0.62, 0.9  # weeks 60-90 % busier than any reference week
    cal = B.calibrate(need_table({B.ROW_RULE: rows}), DEFAULTS)
    assert cal.row_count_tolerance == 0.65 and cal.rate == 0.01  # the busiest week stays rejected
    assert cal.column_tolerances == {}


def test_column_tolerances_are_read_by_the_gate_and_checked(onboarded):
    """The key cli.init writes widens the gate's rule; a typo in it is named."""
    _, _, params, frame, raw = onboarded
    src, v = params.source, params.validation
    column, tols = next((c, t) for c, t in v.column_tolerances.items() if "quantiles" in t)
    as_of = params.window.as_of
    reference = pd.concat([slice_week(frame, src.time_column, w) for w in training_weeks(as_of, 2)])
    start, end = week_bounds(as_of)

    def ranges(vcfg):
        rule = next(e for e in build_suite(src, vcfg, reference, start, end, 2)
                    if e.type == "ExpectColumnQuantileValuesToBeBetween" and e.column == column)
        return np.array(rule.kwargs["quantile_ranges"]["value_ranges"]), rule.description

    wide, said = ranges(v)
    narrow, _ = ranges(dataclasses.replace(v, column_tolerances={}))
    assert (wide[:, 0] < narrow[:, 0]).all() and (wide[:, 1] > narrow[:, 1]).all()
    assert f"± {tols['quantiles']:g} IQR" in said
    for entry, words in [({"quantile": 2}, "must be one of nulls, categories, quantiles"),
                         ({"quantiles": -1}, "must be a number >= 0"), (3, "must be a mapping")]:
        bad = copy.deepcopy(raw)
        bad["validation"]["column_tolerances"] = {column: entry}
        with pytest.raises(ConfigError, match=re.escape(f"'validation.column_tolerances.{column}")) as e:
            parse_params(bad)
        assert words in str(e.value)


def test_the_target_median_is_widened_last():
    """A shifted target is the costliest break to miss: the budget keeps the target's own rejected week and lets
    the other rules' weeks through, though widening the target would be cheaper."""
    target, other = quiet(100), quiet(100)
    target[10] = 1.2
    other[20] = 3.0
    rules = {("quantiles", "y"): target, ("quantiles", "x"): other}
    plain = B.calibrate(need_table(rules), DEFAULTS)
    assert plain.column_tolerances == {"y": {"quantiles": 1.3}}
    kept = B.calibrate(need_table(rules), DEFAULTS, protect=(("quantiles", "y"),))
    assert kept.column_tolerances == {"x": {"quantiles": 3.1}} and list(kept.alarms[kept.alarms].index) == [10]


def test_a_weekly_series_with_a_missing_reading_is_not_a_broken_feed():
    """statsmodels' CO2 series (a reading a week, 1958-2001, `19580329` dates, 59 readings missing): a week whose
    one reading is missing was quarantined as a feed empty all week, and the window reached back 761 weeks (the
    land stage took ten minutes to validate them one by one)."""
    import statsmodels.datasets.co2 as co2

    path = Path(co2.__file__).parent / "co2.csv"
    prof = P.profile({path.name: read_table(path, None)}, path=str(path), target="co2")
    params = parse_params(yaml.safe_load(R.render_params(prof, (ROOT / "params.yaml").read_text())))
    assert params.source.time_column == "date" and params.window.train_weeks == T.MAX_TRAIN_WEEKS
    assert "at most three years of weeks" in " ".join(prof.notes)
    data = load_source(params.source, ROOT)
    t = params.source.time_column
    missing = data[data["co2"].isna()][t].iloc[0]  # the first week without its reading (May 1958)
    as_of = (missing.normalize() + pd.Timedelta(days=7 - missing.weekday())).date()  # the Monday after it
    start, end = week_bounds(as_of)
    batch = data[(data[t] >= start) & (data[t] < end)]
    weeks = training_weeks(as_of, 4)
    reference = data[(data[t] >= week_bounds(weeks[0])[0]) & (data[t] < start)]
    assert len(batch) == 1 and batch["co2"].isna().all() and reference["co2"].notna().all()
    report = validate_batch(batch, build_suite(params.source, params.validation, reference, start, end, len(weeks)))
    assert report.success, report.failures
    # a feed of many rows a week empty all week still fails (test_validation: a feature empty for the whole week)


def test_the_next_extreme_lies_past_the_record_by_what_the_tail_says():
    """Weeks whose top values stood close together put the next extreme just past their record; weeks where a few
    stood far out put it further; a rarer level lies further still; fewer than half a year of weeks say nothing."""
    rng = np.random.default_rng(0)
    calm = rng.uniform(0, 1, 52)
    spiky = np.concatenate([calm, [3.0, 5.0]])
    at = B.next_extreme(calm, 0.001)
    assert calm.max() < at < calm.max() + 1
    assert B.next_extreme(spiky, 0.001) > at + 2
    assert B.next_extreme(calm, 0.0001) > at
    assert B.next_extreme(calm[:B.TAIL_MIN_WEEKS - 1], 0.01) is None  # too few weeks to read a tail from


def test_with_the_tail_the_rules_reach_past_their_record_but_the_target_median_does_not():
    """validation.tail_room "all": a rule whose weeks needed up to 1.3 IQR ends where their tail puts the next
    extreme, not at 1.3 (at most the cap: still a rule); the target's median (protected) stays at its own record."""
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-0.5, 1.3, 52), rng.uniform(-0.5, 1.3, 52)
    x[7] = y[9] = 1.3
    rules = {("quantiles", "x"): list(x), ("quantiles", "y"): list(y)}
    cal = B.calibrate(need_table(rules), DEFAULTS, protect=(("quantiles", "y"),), tail=True)
    assert B.calibrate(need_table(rules), DEFAULTS).column_tolerances["x"] == {"quantiles": 1.3}
    reach = cal.column_tolerances["x"]["quantiles"]
    assert 1.4 < reach < B.MAX_QUANTILE_TOLERANCE and cal.reached == {("quantiles", "x"): reach}
    assert cal.column_tolerances["y"] == {"quantiles": 1.3}
    assert any("reach past their replayed extreme" in n for n in cal.notes), cal.notes
