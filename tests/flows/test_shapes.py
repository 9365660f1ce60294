"""Shapes of data the shared datasets do not have as delivered (benchmarks/shapes.py builds them from those):
`cli.init` -> `dvc repro` -> weekly runs -> decisions, with no edit of params.yaml.

- daily_numeric: one row a day, numeric features only (no slice column), time stamps carrying UTC offsets
- aqi_gap: a multiclass text target with a rare class, six rows per time stamp, a feed silent for six months;
  weekly runs on the first weeks after the outage
- target_only: the time and the target, no other column: the calendar features carry the model
"""
from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
import yaml

from benchmarks.shapes import GAP, aqi_gap, daily_numeric, target_only
from tests.conftest import init_project, make_project, run

pytestmark = pytest.mark.timeout(1800)  # each module fixture onboards a dataset and runs several weeks


def onboard(tmp_path_factory, name: str, build) -> tuple:
    repo = make_project(tmp_path_factory.mktemp(name) / "repo")
    args = build(tmp_path_factory.mktemp(f"{name}-files"))
    printed = init_project(repo, *args)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "onboarded"], repo)
    repro = run(["dvc", "repro"], repo)
    return repo, printed, repro.stdout


@pytest.fixture(scope="module")
def daily(prefect_api, tmp_path_factory):
    from flows.weekly_retrain import weekly_retrain

    repo, printed, repro = onboard(tmp_path_factory, "daily", daily_numeric)
    states = [weekly_retrain(project_dir=str(repo), return_state=True) for _ in range(2)]
    return repo, printed, repro, states


def test_numeric_daily_data_with_offsets_runs_without_a_slice_column(daily):
    repo, printed, repro, states = daily
    params = yaml.safe_load((repo / "params.yaml").read_text())
    s = params["source"]
    assert s["categorical_features"] == [] and params["evaluate"]["slice_column"] is None
    assert "slices: none" in printed and s["calendar"] == ["day_of_week", "month"]  # one row a day
    # the error-by-slice table dvc.yaml declares is written anyway, with its header only
    by_slice = pd.read_csv(repo / "data/eval/plots/error_by_slice.csv")
    assert list(by_slice.columns) == ["slice", "mae", "rows"] and by_slice.empty
    assert "Running stage 'evaluate'" in repro
    # offsets in the time text: the times are UTC, the local 08:00 reading of each day
    batch = pd.read_parquet(sorted((repo / "data/raw").glob("*.parquet"))[-1])
    assert str(batch[s["time_column"]].dt.tz) == "UTC"
    assert set(batch[s["time_column"]].dt.hour) <= {12, 13}  # 08:00 at -04:00 (summer) or -05:00 (winter)
    results = [st.result() for st in states if st.is_completed()]
    assert len(results) == 2, [st.message for st in states]
    # a week of 7 rows decides too: a candidate short of the absolute thresholds is rejected, saying so
    assert "promote" in {r["action"] for r in results}
    assert {r["action"] for r in results} <= {"promote", "ab_test", "hold", "reject"}
    for r in results:
        assert r["action"] != "reject" or "absolute thresholds" in r["summary"] or "champion" in r["summary"], r
    # each week's contract is saved with the run: its rules and the weeks they were learned from
    contract = json.loads((repo / "data/runs" / results[-1]["week"] / "contract.json").read_text())
    assert contract["learned_from"] and contract["suite"]


@pytest.fixture(scope="module")
def gap(prefect_api, tmp_path_factory):
    from flows.weekly_retrain import weekly_retrain

    repo, printed, repro = onboard(tmp_path_factory, "aqi", aqi_gap)
    first = weekly_retrain(project_dir=str(repo), return_state=True)
    first_metrics = json.loads((repo / "data/eval/metrics.json").read_text())
    # the first week after the outage, then the next one; and a run asked for a week inside the outage
    after = [weekly_retrain(project_dir=str(repo), as_of=d, return_state=True) for d in ("2015-09-07", None)]
    silent = weekly_retrain(project_dir=str(repo), as_of="2015-05-04", return_state=True)
    return repo, printed, (first, first_metrics), after, silent


def test_a_multiclass_target_with_a_rare_class_onboards_and_decides(gap):
    repo, printed, (first, metrics), _, _ = gap
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["source"]["task"] == "classification" and "multiclass classification (7 classes)" in printed
    assert params["policy"]["cluster_column"] is not None or "row(s) per time stamp" in printed
    assert first.is_completed(), first.message
    assert first.result()["action"] in {"promote", "reject"}
    # the rare top class (one hour in the window) is left out of the fit, not allowed to derail it: with it,
    # gradient boosting's updates diverged (log loss 25.6, accuracy below the prior's)
    m, b = metrics["model"], metrics["baseline"]
    assert m["accuracy"] > 1.3 * b["accuracy"] and m["log_loss"] < 2 * b["log_loss"], metrics


def test_after_an_outage_the_window_reaches_back_to_the_weeks_with_data(gap):
    repo, _, _, after, silent = gap
    for state in after:
        assert state.is_completed(), state.message
    weeks = [s.result()["week"] for s in after]
    assert weeks == ["2015-09-07", "2015-09-14"]
    manifest = json.loads((repo / "data/raw/_landed.json").read_text())
    window = [date.fromisoformat(w) for w in manifest["windows"]["2015-09-07"]]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert len(window) == params["window"]["train_weeks"]
    # the weeks before the outage: a window week is keyed by the day after its last day, so it starts 7 days
    # before its key; the newest one starts before the feed went silent
    assert max(window) - timedelta(days=7) < date.fromisoformat(GAP[0]) and window == sorted(window)
    # a week inside the outage: the run fails in words, naming the week and where the data is
    assert silent.is_failed()
    assert "no rows for the week 2015-04-27..2015-05-03" in silent.message


def test_a_series_of_the_target_alone_learns_from_the_calendar(prefect_api, tmp_path_factory):
    """Hourly rentals with nothing but their time: `cli.init` refused it ("no usable feature columns are left");
    the hour, weekday and month of the time are features enough to beat the median by far."""
    from flows.weekly_retrain import weekly_retrain

    repo, printed, repro = onboard(tmp_path_factory, "target_only", target_only)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["source"]["numeric_features"] == ["cal_hour", "cal_day_of_week", "cal_month"], printed
    assert params["source"]["categorical_features"] == [] and "calendar features alone" in printed
    metrics = json.loads((repo / "data/eval/metrics.json").read_text())
    assert metrics["model"]["mae"] < 0.6 * metrics["baseline"]["mae"], metrics
    state = weekly_retrain(project_dir=str(repo), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["action"] in {"promote", "ab_test"}, state.result()["summary"]
