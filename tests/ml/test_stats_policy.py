import numpy as np
import pandas as pd
import pytest

from ml.config import ConfigError, PolicyConfig
from ml.policy import AB_TEST, PROMOTE, REJECT, decide
from ml.stats import Comparison, compare_losses, paired_bootstrap, slice_changes


def losses(n=3000, effect=0.0, seed=0, cluster_sd=0.0, k=100):
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, k, size=n)
    shock = rng.normal(scale=cluster_sd, size=k)[clusters]  # errors shared within a cluster (same hour)
    champ = np.abs(rng.normal(10, 3, size=n) + shock)
    cand = champ * (1 + effect) + rng.normal(scale=0.5, size=n)
    return champ, np.abs(cand), clusters


def test_bootstrap_ci_covers_the_true_change_and_has_the_right_sign():
    champ, cand, _ = losses(effect=-0.10)
    c = paired_bootstrap(champ, cand, samples=1000)
    assert c.ci_low < c.rel_change < c.ci_high < 0
    assert c.ci_low < -0.10 < c.ci_high or abs(c.rel_change + 0.10) < 0.01


def test_clustered_interval_is_wider_when_errors_share_a_cluster():
    champ, cand, clusters = losses(effect=-0.05, cluster_sd=6, k=40)
    rows = paired_bootstrap(champ, cand, samples=1000)
    blocks = paired_bootstrap(champ, cand, clusters, samples=1000)
    assert blocks.clusters == 40 and rows.clusters == len(champ)
    assert (blocks.ci_high - blocks.ci_low) > (rows.ci_high - rows.ci_low)


def test_bootstrap_is_seeded():
    champ, cand, clusters = losses()
    assert paired_bootstrap(champ, cand, clusters, seed=3) == paired_bootstrap(champ, cand, clusters, seed=3)


def test_bootstrap_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_slice_changes_flag_small_slices_as_not_enforced():
    vals = np.array(["JFK"] * 400 + ["EWR"] * 50)
    champ = np.ones(450)
    cand = np.r_[np.full(400, 0.9), np.full(50, 1.5)]
    out = {s["slice"]: s for s in slice_changes(vals, champ, cand, "origin", min_rows=300)}
    assert out["JFK"]["enforced"] and out["JFK"]["rel_change"] == pytest.approx(-0.1)
    assert not out["EWR"]["enforced"] and out["EWR"]["rel_change"] == pytest.approx(0.5)


POLICY = PolicyConfig(min_improvement=0.02, min_gain_vs_baseline=0.2, max_slice_regression=0.05)
GOOD = {"mae": 11.9, "rows": 6000}
BASE = {"mae": 20.0, "rows": 6000}
DRIFT = {"n_drifted": 3, "n_columns": 11, "share_drifted": 3 / 11}


def comp(rel, lo, hi):
    return Comparison(champion=12.6, candidate=12.6 * (1 + rel), rel_change=rel, ci_low=lo, ci_high=hi,
                      confidence=0.95, rows=6000, clusters=120)


@pytest.mark.parametrize("comparison,slices,policy,drift,action,words", [
    (None, [], POLICY, DRIFT, PROMOTE, "first champion"),
    (comp(-0.056, -0.071, -0.040), [], POLICY, DRIFT, PROMOTE, "−5.6%, 95% CI −7.1%…−4.0%"),
    (comp(-0.03, -0.06, -0.01), [], POLICY, DRIFT, AB_TEST, "not conclusively"),
    (comp(-0.03, -0.06, -0.01), [], PolicyConfig(ab_when_inconclusive=False), DRIFT, REJECT, "too little"),
    (comp(0.04, 0.01, 0.07), [], POLICY, DRIFT, REJECT, "not better"),
    (comp(-0.056, -0.071, -0.040), [{"column": "origin", "slice": "EWR", "rows": 2000, "champion": 10,
                                      "candidate": 11, "rel_change": 0.10, "enforced": True}],
     POLICY, DRIFT, REJECT, "origin=EWR +10.0%"),
    (comp(-0.056, -0.071, -0.040), [], PolicyConfig(always_ab=True), DRIFT, AB_TEST, "always A/B"),
    (comp(-0.056, -0.071, -0.040), [], POLICY, {"n_drifted": 9, "n_columns": 11, "share_drifted": 9 / 11},
     AB_TEST, "heavy drift"),
])
def test_policy_decides_with_reasons_in_words(comparison, slices, policy, drift, action, words):
    d = decide(policy, "mae", GOOD, BASE, comparison, slices, drift, prior_wins=1)  # a confirmed win
    assert d.action == action
    assert words in d.summary + " ".join(d.reasons)


@pytest.mark.parametrize("prior_wins,confirm,action", [(0, 2, AB_TEST), (1, 2, PROMOTE), (0, 1, PROMOTE),
                                                       (1, 3, AB_TEST), (2, 3, PROMOTE)])
def test_a_win_promotes_only_once_confirmed_on_consecutive_weeks(prior_wins, confirm, action):
    policy = PolicyConfig(confirm_weeks=confirm)
    d = decide(policy, "mae", GOOD, BASE, comp(-0.056, -0.071, -0.040), [], DRIFT, prior_wins=prior_wins)
    assert d.action == action
    assert d.evidence["conclusive"] is True
    assert f"win {prior_wins + 1} of {confirm}" in " ".join(d.reasons)


def test_candidate_failing_absolute_thresholds_is_rejected_even_without_champion():
    d = decide(POLICY, "mae", {"mae": 18.0, "rows": 10}, BASE, None, [], None)
    assert d.action == REJECT and "10.0% better; need ≥ 20%" in d.summary


def test_summary_carries_the_drift_count():
    d = decide(POLICY, "mae", GOOD, BASE, comp(-0.056, -0.071, -0.040), [], DRIFT)
    assert "3 of 11 feature columns drifted" in d.summary


def test_regression_wording_is_unchanged_with_champion_metrics():
    champion = {"mae": 12.6, "rmse": 21.0, "r2": 0.6, "rows": 6000}
    d = decide(POLICY, "mae", GOOD, BASE, comp(-0.056, -0.071, -0.040), [], DRIFT, prior_wins=1, champion=champion)
    assert d.summary == ("promote: MAE 11.89 vs champion 12.60 (−5.6%, 95% CI −7.1%…−4.0%; 120 resampled clusters); "
                         "no slice worse than 5% (0 slices checked, worst +0.0%); "
                         "3 of 11 feature columns drifted (27%)")
    first = decide(POLICY, "mae", GOOD, BASE, None, [], DRIFT)
    assert first.summary == "promote (first champion): MAE 11.90 vs naive baseline 20.00 (40.5% better; need ≥ 20%)"


CAND = {"log_loss": 0.41, "accuracy": 0.8394, "roc_auc": 0.9121, "rows": 2000}
PRIOR = {"log_loss": 0.62, "accuracy": 0.607, "rows": 2000}  # the class prior: one class for every row, no AUC


def log_loss_comp(rel, lo, hi):
    return Comparison(champion=0.44, candidate=0.44 * (1 + rel), rel_change=rel, ci_low=lo, ci_high=hi,
                      confidence=0.95, rows=2000, clusters=7)


@pytest.mark.parametrize("comparison,champion,action,words", [
    (None, None, PROMOTE, "promote (first champion): log_loss 0.41 vs naive baseline 0.62 (33.9% better; need ≥ 20%); "
                          "accuracy 0.839, ROC AUC 0.912"),
    # log loss decides: a conclusive gain in log loss promotes even though the champion's accuracy is higher
    (log_loss_comp(-0.07, -0.09, -0.05), {"log_loss": 0.44, "accuracy": 0.851, "roc_auc": 0.905}, PROMOTE,
     "promote: log_loss 0.41 vs champion 0.44 (−7.0%, 95% CI −9.0%…−5.0%; 7 resampled clusters); "
     "accuracy 0.839 vs champion 0.851, ROC AUC 0.912 vs champion 0.905; no slice worse than 5%"),
    (log_loss_comp(0.03, 0.01, 0.05), {"log_loss": 0.40, "accuracy": 0.820}, REJECT,  # champion without an AUC
     "accuracy 0.839 vs champion 0.820, ROC AUC 0.912; no slice"),
    (log_loss_comp(-0.07, -0.09, -0.05), None, PROMOTE, "accuracy 0.839, ROC AUC 0.912; no slice"),
])
def test_classification_lines_report_accuracy_and_auc_while_log_loss_decides(comparison, champion, action, words):
    d = decide(POLICY, "log_loss", CAND, PRIOR, comparison, [], None, prior_wins=1, champion=champion)
    assert d.action == action
    assert words in d.summary, d.summary
    assert any(r.startswith("accuracy 0.839") for r in d.reasons)


def test_a_classifier_failing_the_baseline_is_rejected_with_its_scores():
    d = decide(POLICY, "log_loss", {"log_loss": 0.60, "accuracy": 0.64}, PRIOR, None, [], None)  # multi-class: no AUC
    assert d.action == REJECT
    assert d.summary == ("reject: fails the absolute thresholds — log_loss 0.60 vs naive baseline 0.62 (3.2% better; "
                         "need ≥ 20%); accuracy 0.640")


def hourly_losses(phi: float, stations: int = 1, weeks: int = 8, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray,
                                                                                           np.ndarray]:
    """A holdout of `weeks` of hourly rows at `stations` stations whose loss difference follows an AR(1) series in
    time with lag-1 correlation `phi` (shared by the stations of one hour, like weather)."""
    rng = np.random.default_rng(seed)
    hours = weeks * 7 * 24
    ar = np.empty(hours)
    ar[0] = rng.normal()
    for t in range(1, hours):
        ar[t] = phi * ar[t - 1] + np.sqrt(1 - phi ** 2) * rng.normal()
    time = pd.date_range("2014-03-02", periods=hours, freq="h", tz="UTC")
    holdout = pd.DataFrame({"time": np.repeat(time, stations), "station": np.tile(np.arange(stations), hours)})
    champ = rng.gamma(2.0, 0.25, size=len(holdout))
    cand = np.maximum(champ * 0.97 + 0.15 * np.repeat(ar, stations) + rng.normal(scale=0.05, size=len(holdout)), 0)
    return holdout, champ, cand


def width(c: Comparison) -> float:
    return c.ci_high - c.ci_low


ROWS = PolicyConfig(cluster_column=None, bootstrap_samples=1000)


def test_without_a_cluster_column_whole_days_are_resampled_and_the_interval_widens_on_autocorrelated_hours():
    holdout, champ, cand = hourly_losses(phi=0.95)
    rows, _ = compare_losses(champ, cand, holdout, ROWS)
    days, _ = compare_losses(champ, cand, holdout, ROWS, time_column="time")
    assert rows.clusters == len(holdout) == 8 * 7 * 24 and days.clusters == 8 * 7  # 24-hour blocks by default
    assert days.rel_change == rows.rel_change
    assert width(days) > 2 * width(rows), (width(days), width(rows))
    six, _ = compare_losses(champ, cand, holdout, PolicyConfig(block_hours=6, bootstrap_samples=1000),
                            time_column="time")
    assert six.clusters == 8 * 7 * 4


def test_on_independent_hours_blocks_and_rows_agree():
    holdout, champ, cand = hourly_losses(phi=0.0)
    rows, _ = compare_losses(champ, cand, holdout, ROWS)
    days, _ = compare_losses(champ, cand, holdout, ROWS, time_column="time")
    assert 0.7 < width(days) / width(rows) < 1.4


def test_a_cluster_column_still_decides_the_resampling_unit():
    holdout, champ, cand = hourly_losses(phi=0.95, stations=12)
    policy = PolicyConfig(cluster_column="station", bootstrap_samples=500)
    with_time, _ = compare_losses(champ, cand, holdout, policy, seed=4, time_column="time")
    without, _ = compare_losses(champ, cand, holdout, policy, seed=4)
    assert with_time == without == paired_bootstrap(champ, cand, holdout["station"].to_numpy(), samples=500, seed=4)
    assert with_time.clusters == 12


def test_block_hours_must_be_positive():
    with pytest.raises(ConfigError, match="policy.block_hours"):
        PolicyConfig(block_hours=0)
