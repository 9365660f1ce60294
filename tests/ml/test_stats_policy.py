import numpy as np
import pytest

from ml.config import PolicyConfig
from ml.policy import AB_TEST, PROMOTE, REJECT, decide
from ml.stats import Comparison, paired_bootstrap, slice_changes


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
