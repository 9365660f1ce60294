"""A quantile rule's companion (ml/companion.py): a week whose column moved with the other columns passes, with a
note that says so; a column that moved on its own fails as before."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ml.config import SourceConfig, ValidationConfig
from ml.split import week_bounds
from ml.suite import build_suite
from ml.validation import validate_batch

SOURCE = SourceConfig(kind="files", path="x", time_column="time", target="y", task="regression", unit_id="id",
                      numeric_features=("a", "b", "noise"), categorical_features=())
CONTRACT = ValidationConfig(min_rows=10)


def weeks_of(level: np.ndarray, rng) -> pd.DataFrame:
    """Hourly rows, one level per week shared by a and b (an episode lifts them together); noise and the target y
    apart (the target's rule has no companion: an episode that moves it still fails, as before)."""
    t = pd.date_range("2024-01-01", periods=24 * 7 * len(level), freq="h", tz="UTC")
    common = np.repeat(level, 24 * 7) + rng.gamma(2.0, 10.0, len(t))
    return pd.DataFrame({"time": t, "id": np.arange(len(t)).astype(str),
                         "a": common + rng.normal(0, 3, len(t)), "b": 0.5 * common + rng.normal(0, 2, len(t)),
                         "noise": rng.normal(0, 1, len(t)), "y": rng.normal(100, 5, len(t))})


@pytest.fixture(scope="module")
def episode():
    """Eight ordinary weeks, then a week whose level is far above any of them."""
    rng = np.random.default_rng(0)
    df = weeks_of(np.array([50, 55, 45, 60, 50, 40, 55, 50, 140.0]), rng)
    start, end = week_bounds((df["time"].iloc[-1] + pd.Timedelta(hours=1)).date())
    return df[df["time"] < start], df[df["time"] >= start].reset_index(drop=True), start, end


def judge(episode, batch, vcfg=CONTRACT):
    reference, _, start, end = episode
    return validate_batch(batch, build_suite(SOURCE, vcfg, reference, start, end, 8))


def test_a_week_that_moved_with_the_other_columns_passes_and_says_so(episode):
    week = episode[1]
    without = judge(episode, week, dataclasses.replace(CONTRACT, companions=False))
    assert not without.success and any("'a'" in f for f in without.failures), without.failures
    report = judge(episode, week)
    assert report.success, report.failures
    assert any(e.startswith("'a' ") and "moved with the other columns" in e and "predicted" in e
               for e in report.excused), report.excused
    assert report.result["excused"] == report.excused


@pytest.mark.parametrize("column, change", [("a", lambda s: s * 1.6), ("b", lambda s: s * 2.54),
                                            ("y", lambda s: s + 60)])
def test_a_column_that_moved_on_its_own_still_fails(episode, column, change):
    """The same week with one column broken alone (other units, a shifted target): the others no longer put it
    where it is."""
    week = episode[1]
    report = judge(episode, week.assign(**{column: change(week[column])}))
    assert not report.success
    assert any(f"'{column}'" in f for f in report.failures), report.failures
    assert not any(e.startswith(f"'{column}'") for e in report.excused)


def test_a_column_the_others_do_not_predict_and_the_target_get_no_companion(episode):
    reference, _, start, end = episode
    suite = build_suite(SOURCE, CONTRACT, reference, start, end, 8)
    rules = {e.column: e for e in suite if e.type == "ExpectColumnQuantileValuesToBeBetween"}
    assert rules["noise"].companion is None
    assert rules["a"].companion is not None and rules["b"].companion is not None
    assert rules["y"].companion is None  # the target's median rule has none


def test_the_replay_asks_no_widening_for_a_week_the_companion_lets_through():
    """`cli.init` and the weekly contract calibrate tolerances on the replayed needs: an episode the others
    explain needs no wider rule (so the rule stays tight for a column that moves alone), a broken week still does."""
    from ml.budget import replay_contract

    rng = np.random.default_rng(1)
    levels = np.r_[rng.normal(50, 6, 20), 140.0, rng.normal(50, 6, 5)]
    df = weeks_of(levels, rng)
    broken = np.floor((df["time"] - df["time"].iloc[0]) / pd.Timedelta(days=7)).to_numpy() == 24
    df.loc[broken, "b"] *= 2.54
    weeks = pd.Series(np.floor((df["time"] - df["time"].iloc[0]) / pd.Timedelta(days=7)).astype(int))
    rules = {"quantiles": ["a", "b", "y"]}
    relations = {"inputs": ["a", "b", "noise", "y"], "time_column": "time", "timezone": "UTC"}
    plain = replay_contract(df, weeks, rules, 8, CONTRACT, target="y")
    paired = replay_contract(df, weeks, rules, 8, CONTRACT, target="y", companion=relations)
    assert plain.loc[20, ("quantiles", "a")] > 3
    assert paired.loc[20, ("quantiles", "a")] < 1
    assert paired[("quantiles", "y")].equals(plain[("quantiles", "y")])  # the target has no companion
    assert paired.loc[24, ("quantiles", "b")] > 1.5  # still past the default tolerance (1 IQR)
    assert (paired.fillna(0) <= plain.fillna(0) + 1e-9).all().all()
