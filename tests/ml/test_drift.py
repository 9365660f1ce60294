"""drift_summary gives Evidently's default DataDriftPreset verdicts (method, score, threshold, drift) on small and
large data; write_drift_report writes the Evidently HTML atomically."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.drift import _is_drifted, drift_summary, write_drift_report


def _evidently(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """Per-column (label, score, threshold, drifted) and dataset-level figures from Evidently's own report."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset()], include_tests=True).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition))
    result = snapshot.dict()
    columns, share, count = {}, None, None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            columns[config["column"]] = {"label": config["method"], "score": float(metric["value"]),
                                         "threshold": float(config["threshold"])}
        else:  # DriftedColumnsCount
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
    dataset_drift = None
    for test in result["tests"]:
        failed = str(test["status"]).endswith("FAIL")
        if test["id"] == "drift":
            columns[test["metric_config"]["params"]["column"]]["drifted"] = failed
        else:  # "share of drifted columns < drift_share" fails exactly when the dataset drifted
            dataset_drift = failed
    return {"columns": columns, "count": count, "share": share, "dataset_drift": dataset_drift}


def _frame(rng: np.random.Generator, rows: int, *, shift: float = 0.0, new_category: bool = False,
           binary_p: float = 0.5, nan_share: float = 0.0) -> pd.DataFrame:
    """A feature frame; `shift` moves the numeric columns, `new_category` adds a category and drops another."""
    categories = ["b", "c", "d", "e"] if new_category else ["a", "b", "c", "d"]
    frame = pd.DataFrame({
        "normal": rng.normal(10 + shift, 2, rows),
        "skewed": rng.lognormal(1 + shift / 4, 0.5, rows),
        "stable": rng.normal(0, 1, rows),
        "few_values": rng.integers(0, 4, rows) + (rng.random(rows) < shift / 3),  # <= 5 distinct numbers
        "constant": np.full(rows, 7.0),
        "carrier": rng.choice(categories, rows, p=[0.4, 0.3, 0.2, 0.1]),
        "is_weekend": rng.choice(["no", "yes"], rows, p=[binary_p, 1 - binary_p]),
    })
    if nan_share:
        for column in ("normal", "skewed", "carrier", "is_weekend"):
            frame.loc[rng.random(rows) < nan_share, column] = None
        # +-inf is dropped like NaN; kept in a column that also has NaN, see the note in ml/drift.py
        frame.loc[rng.random(rows) < nan_share / 5, "skewed"] = np.inf
    return frame


NUMERIC = ["normal", "skewed", "stable", "few_values", "constant"]
CATEGORICAL = ["carrier", "is_weekend"]

# name -> (reference rows, current kwargs, reference kwargs, expected {column: (method, drifted)})
CASES = {
    "large_unshifted": (5000, {}, {}, {"normal": ("wasserstein", False), "skewed": ("wasserstein", False),
                                       "few_values": ("jensenshannon", False), "constant": ("jensenshannon", False),
                                       "carrier": ("jensenshannon", False), "is_weekend": ("jensenshannon", False)}),
    "large_shifted": (5000, {"shift": 1.5, "new_category": True, "binary_p": 0.2}, {},
                      {"normal": ("wasserstein", True), "skewed": ("wasserstein", True),
                       "stable": ("wasserstein", False), "few_values": ("jensenshannon", True),
                       "carrier": ("jensenshannon", True), "is_weekend": ("jensenshannon", True)}),
    # carrier: None because Evidently's chi-square treats reference counts as exact expectations, so it flags
    # same-distribution samples more often than 5 % (p = 0.006 with this seed); only agreement is checked
    "small_unshifted": (400, {}, {}, {"normal": ("ks", False), "few_values": ("chisquare", False),
                                      "constant": ("z", False), "carrier": ("chisquare", None),
                                      "is_weekend": ("z", False)}),
    "small_shifted": (400, {"shift": 1.5, "new_category": True, "binary_p": 0.2}, {},
                      {"normal": ("ks", True), "skewed": ("ks", True), "few_values": ("chisquare", True),
                       "carrier": ("chisquare", True), "is_weekend": ("z", True)}),
    # 1,100 rows but ~15 % NaN: the rule counts cleaned reference rows, so this is the small-data branch
    "nan_small_after_cleaning": (1100, {"nan_share": 0.15}, {"nan_share": 0.15},
                                 {"normal": ("ks", False), "carrier": ("chisquare", None)}),
    "nan_large": (3000, {"nan_share": 0.2, "shift": 0.5}, {"nan_share": 0.05},
                  {"normal": ("wasserstein", True), "carrier": ("jensenshannon", False)}),
    "boundary_1000": (1000, {"shift": 0.2}, {}, {"normal": ("ks", None), "carrier": ("chisquare", None)}),
    "boundary_1001": (1001, {"shift": 0.2}, {}, {"normal": ("wasserstein", None), "carrier": ("jensenshannon", None)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_drift_summary_matches_evidently(case):
    rows, current_kwargs, reference_kwargs, expected = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    reference = _frame(rng, rows, **reference_kwargs)
    current = _frame(rng, int(rows * 1.3), **current_kwargs)  # sizes differ on purpose (chi-square rescaling)

    ours = drift_summary(reference, current, NUMERIC, CATEGORICAL)
    theirs = _evidently(reference, current, NUMERIC, CATEGORICAL)

    for column, (method, drifted) in expected.items():  # the case exercises the branch it claims to
        assert ours["columns"][column]["method"] == method, column
        if drifted is not None:
            assert ours["columns"][column]["drifted"] is drifted, column
    for column, ev in theirs["columns"].items():
        mine = ours["columns"][column]
        assert mine["method_label"] == ev["label"], column
        assert mine["drifted"] is ev["drifted"], column
        assert mine["threshold"] == ev["threshold"], column
        assert mine["statistic"] == pytest.approx(ev["score"], rel=1e-6, abs=1e-12), column
    assert ours["n_drifted"] == theirs["count"]
    assert ours["share_drifted"] == pytest.approx(theirs["share"])
    assert ours["dataset_drift"] is theirs["dataset_drift"]


def test_one_sided_values_and_constant_reference_match_evidently():
    """Categories only on one side, a reference constant that moves in current, a numeric column going binary."""
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"level": np.full(2000, 3.0), "flag": rng.integers(0, 2, 2000).astype(float),
                              "origin": rng.choice(["EWR", "JFK"], 2000), "terminal": rng.integers(1, 4, 2000)})
    current = pd.DataFrame({"level": rng.normal(3, 0.01, 1500), "flag": np.ones(1500),
                            "origin": pd.Categorical(rng.choice(["LGA", "JFK"], 1500), categories=["JFK", "LGA", "X"]),
                            "terminal": rng.integers(1, 4, 1500)})  # int-coded categorical, pandas category dtype
    for rows in (2000, 300):  # both branches: jensenshannon / wasserstein and z / ks
        ours = drift_summary(reference[:rows], current[:rows], ["level", "flag"], ["origin", "terminal"])
        theirs = _evidently(reference[:rows], current[:rows], ["level", "flag"], ["origin", "terminal"])
        assert set(theirs["columns"]) == {"level", "flag", "origin", "terminal"}
        for column, ev in theirs["columns"].items():
            assert ours["columns"][column]["method_label"] == ev["label"]
            assert ours["columns"][column]["drifted"] is ev["drifted"]
            assert ours["columns"][column]["statistic"] == pytest.approx(ev["score"], rel=1e-6, abs=1e-12)
        assert ours["columns"]["level"]["drifted"]  # std(reference) = 0 -> Evidently divides by 0.001
        assert ours["columns"]["origin"]["drifted"]
    assert ours["columns"]["origin"]["method"] == "chisquare"  # 3 values across both sides -> not binary


def test_summary_is_plain_json():
    rng = np.random.default_rng(0)
    summary = drift_summary(_frame(rng, 1500), _frame(rng, 1500, shift=2.0), NUMERIC, CATEGORICAL, drift_share=0.3)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["n_columns"] == 7 and summary["reference_rows"] == 1500 and summary["drift_share"] == 0.3
    assert summary["dataset_drift"] is (summary["share_drifted"] >= 0.3)
    assert summary["columns"]["normal"]["p_value"] is None  # a distance, not a test
    small = drift_summary(_frame(rng, 200), _frame(rng, 200), NUMERIC, CATEGORICAL)
    assert small["columns"]["normal"]["p_value"] == small["columns"]["normal"]["statistic"]


def test_threshold_comparisons_follow_evidently():
    """At the threshold itself: ks drifts (p <= 0.05), chisquare / z do not (p < 0.05), distances drift (>= 0.1)."""
    assert _is_drifted("ks", 0.05) is True
    assert _is_drifted("chisquare", 0.05) is False and _is_drifted("z", 0.05) is False
    assert _is_drifted("wasserstein", 0.1) is True and _is_drifted("jensenshannon", 0.1) is True
    assert _is_drifted("wasserstein", 0.0999) is False and _is_drifted("ks", 0.0501) is False


def test_dataset_drift_when_share_equals_drift_share():
    rng = np.random.default_rng(3)
    reference, current = _frame(rng, 2000), _frame(rng, 2000, shift=1.5)
    share = drift_summary(reference, current, NUMERIC, CATEGORICAL)["share_drifted"]
    assert 0 < share < 1
    assert drift_summary(reference, current, NUMERIC, CATEGORICAL, drift_share=share)["dataset_drift"] is True
    assert drift_summary(reference, current, NUMERIC, CATEGORICAL, drift_share=share + 1e-9)["dataset_drift"] is False


def test_a_column_without_values_is_drift_not_a_crash(tmp_path):
    """Evidently raises on an all-null column; the summary calls it drifted and says why, the report skips it."""
    rng = np.random.default_rng(0)
    reference, current = _frame(rng, 300), _frame(rng, 300)
    current["normal"] = np.nan
    current["carrier"] = None
    out = drift_summary(reference, current, NUMERIC, CATEGORICAL)
    for column in ("normal", "carrier"):
        assert out["columns"][column]["drifted"] is True
        assert out["columns"][column]["method_label"] == "no values in the current data"
    report = write_drift_report(reference, current, NUMERIC, CATEGORICAL, tmp_path / "drift.html")
    assert Path(report["html"]).stat().st_size > 0


def test_write_drift_report_writes_html_with_columns(tmp_path):
    rng = np.random.default_rng(0)
    reference, current = _frame(rng, 600), _frame(rng, 400, shift=1.0)
    for frame in (reference, current):
        frame["arr_delay"] = frame["normal"] * 3 + rng.normal(0, 1, len(frame))
        frame["predicted_delay"] = frame["normal"] * 3
    html = tmp_path / "reports" / "drift.html"
    out = write_drift_report(reference, current, ["normal", "skewed"], ["carrier"], html, target="arr_delay",
                             prediction="predicted_delay", sample_rows=500, seed=1)
    assert out == {"html": str(html), "sampled_rows": {"reference": 500, "current": 400}}
    text = html.read_text(encoding="utf-8")
    for column in ("normal", "skewed", "carrier", "arr_delay", "predicted_delay"):
        assert column in text
    assert [p.name for p in html.parent.iterdir()] == ["drift.html"]  # no temp file left behind
