import numpy as np
import pandas as pd
import pytest

from ml.config import ConfigError, PolicyConfig
from ml.policy import AB_TEST, HOLD, PROMOTE, REJECT, ABPlan, TrackRecord, decide, track_record
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


POLICY = PolicyConfig(min_improvement=0.02, min_gain_vs_baseline=0.2, max_slice_regression=0.05, max_harm=0.02,
                      harm_risk=0.2)
GOOD = {"mae": 11.9, "rows": 6000}
BASE = {"mae": 20.0, "rows": 6000}
DRIFT = {"n_drifted": 3, "n_columns": 11, "share_drifted": 3 / 11}
FRESH = TrackRecord(gain=-0.02, se=0.005, spread=0.01, weeks=8)  # one more week of data has bought 2 % lower loss
REACHABLE = ABPlan(units=20_000, per_day=2_000, max_days=21)
UNREACHABLE = ABPlan(units=60_000, per_day=900, max_days=21)
SHIFT = {**DRIFT, "target": {"drifted": True, "statistic": 0.41, "threshold": 0.12}, "prediction": {"drifted": False}}


def comp(rel, lo, hi):
    return Comparison(champion=12.6, candidate=12.6 * (1 + rel), rel_change=rel, ci_low=lo, ci_high=hi,
                      confidence=0.95, rows=6000, clusters=120)


SAME = comp(0.0, -0.015, 0.015)  # the candidate's recipe does as well as the champion on the newest week
CLEAR = comp(-0.056, -0.071, -0.040)  # a conclusive win


def test_a_fresher_model_that_is_not_worse_is_promoted_on_the_track_record():
    d = decide(POLICY, "mae", GOOD, BASE, SAME, [], DRIFT, record=FRESH, plan=REACHABLE)
    assert d.action == PROMOTE, d.reasons
    assert d.evidence["expected_change"] == pytest.approx(-0.02)
    assert "−2.0% for one more week of data (track record: 8 weeks)" in " ".join(d.reasons)
    assert "refit on the window including the newest week" in d.reasons[-1]


def test_without_a_track_record_an_even_candidate_keeps_the_champion():
    d = decide(POLICY, "mae", GOOD, BASE, SAME, [], DRIFT, record=None)
    assert d.action == REJECT and "not expected to lower the loss" in d.summary


@pytest.mark.parametrize("comparison,action,words", [
    (comp(-0.03, -0.06, -0.005), REJECT, "not conclusively better, and no newer data"),
    (CLEAR, PROMOTE, "it clears −2.0%"),
])
def test_with_no_newer_data_only_a_conclusive_win_counts(comparison, action, words):
    d = decide(POLICY, "mae", GOOD, BASE, comparison, [], DRIFT, fresher_weeks=0, record=FRESH)
    assert d.action == action
    assert words in d.summary + " ".join(d.reasons)


def test_a_win_on_one_row_is_no_interval_and_not_conclusive():
    """A weekly series holds out one reading: its bootstrap has one cluster and an interval of width 0, which read
    as a conclusive win and was printed as `95% CI −47.6%…−47.6%`."""
    import dataclasses

    one = dataclasses.replace(CLEAR, rows=1, clusters=1, ci_low=CLEAR.rel_change, ci_high=CLEAR.rel_change)
    d = decide(POLICY, "mae", GOOD, BASE, one, [], DRIFT, fresher_weeks=0, record=FRESH)
    assert d.action == REJECT and "not conclusively better" in d.summary
    assert "too few to resample, no interval" in d.summary and "CI" not in d.summary.split("no interval")[0]


@pytest.mark.parametrize("comparison,why", [
    (comp(0.04, 0.01, 0.07), "not expected to lower the loss"),  # worse by more than freshness buys
    (comp(-0.01, -0.20, 0.18), "chance of a worse model is above the bound"),  # too uncertain
])
def test_a_worse_or_too_uncertain_candidate_is_rejected(comparison, why):
    d = decide(POLICY, "mae", GOOD, BASE, comparison, [], DRIFT, record=FRESH)
    assert d.action == REJECT and why in d.summary


def test_a_slice_guardrail_rejects_whatever_the_expected_gain():
    bad = [{"column": "origin", "slice": "EWR", "rows": 2000, "champion": 10, "candidate": 11, "rel_change": 0.10,
            "enforced": True}]
    d = decide(POLICY, "mae", GOOD, BASE, CLEAR, bad, DRIFT, record=FRESH)
    assert d.action == REJECT and "origin=EWR +10.0%" in d.summary


def test_a_running_experiment_is_never_cancelled_by_a_new_candidate():
    running = {"id": "m-v5-vs-v4", "champion_version": "4", "challenger_version": "5", "planned_end": "2013-06-09"}
    d = decide(POLICY, "mae", GOOD, BASE, CLEAR, [], DRIFT, record=FRESH, running=running, plan=REACHABLE)
    assert d.action == HOLD
    assert "experiment m-v5-vs-v4 is running" in " ".join(d.reasons)
    worse = decide(POLICY, "mae", GOOD, BASE, comp(0.04, 0.01, 0.07), [], DRIFT, record=FRESH, running=running)
    assert worse.action == REJECT


@pytest.mark.parametrize("drift", [SHIFT, {"n_drifted": 9, "n_columns": 11, "share_drifted": 9 / 11},
                                   {**DRIFT, "prediction": {"drifted": True, "statistic": 0.3, "threshold": 0.1}}])
@pytest.mark.parametrize("comparison,plan,action,words", [
    (SAME, REACHABLE, AB_TEST, "online A/B test decides (20,000 units planned, 2,000 a day: 10.0 of 21 days)"),
    (CLEAR, REACHABLE, AB_TEST, "online A/B test decides"),  # a shift weighs in whatever the comparison says
    (SAME, UNREACHABLE, REJECT, "an A/B test cannot finish: 60,000 units needed at 900 a day = 67 days"),
    (CLEAR, UNREACHABLE, PROMOTE, "decided offline: a conclusive win promotes"),
])
def test_a_shift_sends_a_would_be_promotion_online_or_raises_the_bar_offline(drift, comparison, plan, action, words):
    d = decide(POLICY, "mae", GOOD, BASE, comparison, [], drift, record=FRESH, plan=plan)
    assert d.action == action, d.reasons
    assert words in " ".join(d.reasons)
    assert d.evidence["shift"]


def test_a_target_shift_is_named_in_words():
    d = decide(POLICY, "mae", GOOD, BASE, SAME, [], SHIFT, record=FRESH, plan=UNREACHABLE)
    assert "the target shifted (statistic 0.41 vs week-to-week bound 0.12)" in d.summary
    worse = decide(POLICY, "mae", GOOD, BASE, comp(0.04, 0.01, 0.07), [], SHIFT, record=FRESH, plan=REACHABLE)
    assert worse.action == REJECT and "the target shifted" in worse.summary


def test_always_ab_needs_an_experiment_that_can_finish():
    policy = PolicyConfig(always_ab=True)
    assert decide(policy, "mae", GOOD, BASE, CLEAR, [], DRIFT, record=FRESH, plan=REACHABLE).action == AB_TEST
    d = decide(policy, "mae", GOOD, BASE, SAME, [], DRIFT, record=FRESH, plan=UNREACHABLE)
    assert d.action == REJECT and "cannot finish" in " ".join(d.reasons)


def test_candidate_failing_absolute_thresholds_is_rejected_even_without_champion():
    d = decide(POLICY, "mae", {"mae": 18.0, "rows": 10}, BASE, None, [], None)
    assert d.action == REJECT and "10.0% better; need ≥ 20%, policy.min_gain_vs_baseline)" in d.summary
    behind = decide(POLICY, "mae", {"mae": 30.0, "rows": 10}, BASE, None, [], None)  # behind the baseline itself
    assert behind.action == REJECT and "50.0% worse; need ≥ 20%" in behind.summary, behind.summary


def test_a_week_too_hard_for_the_champion_too_does_not_keep_the_staler_model():
    # the refit misses the baseline by the required 20 % on the newest week; so does the champion on the same rows
    # (a storm, a pollution episode): the thresholds do not tell them apart and the refit question decides
    hard = Comparison(champion=17.5, candidate=17.0, rel_change=-0.03, ci_low=-0.05, ci_high=-0.01, confidence=0.95,
                      rows=6000, clusters=120)
    d = decide(POLICY, "mae", {"mae": 17.0, "rows": 6000}, BASE, hard, [], None, record=FRESH, same_recipe=True)
    assert d.action == PROMOTE, d.reasons
    assert d.evidence["hard_week"] and "the champion misses the absolute thresholds too" in " ".join(d.reasons)
    assert "worse_than_baseline" not in d.evidence  # both still beat the baseline's 20.0, by less than 20 %
    # both worse than the baseline itself (a daily weather file whose labels were renamed upstream: log loss 3-8
    # against the class prior's 1.4): the refit still serves, and the reasons say where to look
    lost = Comparison(champion=24.0, candidate=22.0, rel_change=-0.08, ci_low=-0.1, ci_high=-0.06, confidence=0.95,
                      rows=6000, clusters=120)
    d = decide(POLICY, "mae", {"mae": 22.0, "rows": 6000}, BASE, lost, [], None, record=FRESH, same_recipe=True)
    assert d.action == PROMOTE and d.evidence["worse_than_baseline"]
    assert "both are worse than the naive baseline itself (MAE 22.00 and 24.00 vs 20.00)" in " ".join(d.reasons)
    # ... and a new recipe still has to be better than the champion on that week
    worse = Comparison(champion=17.5, candidate=19.0, rel_change=0.086, ci_low=0.05, ci_high=0.12, confidence=0.95,
                       rows=6000, clusters=120)
    assert decide(POLICY, "mae", {"mae": 19.0, "rows": 6000}, BASE, worse, [], None, record=FRESH).action == REJECT
    # a champion that meets them keeps the objection: the candidate is the one that fails
    fine = Comparison(champion=12.0, candidate=17.0, rel_change=0.42, ci_low=0.3, ci_high=0.5, confidence=0.95,
                      rows=6000, clusters=120)
    d = decide(POLICY, "mae", {"mae": 17.0, "rows": 6000}, BASE, fine, [], None, record=FRESH, same_recipe=True)
    assert d.action == REJECT and d.summary.startswith("reject: fails the absolute thresholds")


def test_summary_carries_the_drift_count():
    d = decide(POLICY, "mae", GOOD, BASE, CLEAR, [], DRIFT, record=FRESH)
    assert "3 of 11 feature columns drifted beyond their week-to-week variation (27%)" in d.summary


def test_regression_wording_with_champion_metrics():
    champion = {"mae": 12.6, "rmse": 21.0, "r2": 0.6, "rows": 6000}
    d = decide(POLICY, "mae", GOOD, BASE, CLEAR, [], DRIFT, record=FRESH, champion=champion)
    assert d.summary == ("promote: MAE 11.89 vs champion 12.60 (−5.6%, 95% CI −7.1%…−4.0%; 120 resampled clusters); "
                         "3 of 11 feature columns drifted beyond their week-to-week variation (27%); "
                         "expected change in served MAE −7.6%, chance of > 2% worse 0%")
    # slices too small to enforce are no evidence: the line says none was checked, not "worst +0.0%"
    small = slice_changes(np.array(["JFK"] * 40 + ["EWR"] * 50), np.ones(90), np.ones(90), "origin", min_rows=300)
    d = decide(POLICY, "mae", GOOD, BASE, CLEAR, small, DRIFT, record=FRESH, champion=champion)
    assert "no slice checked (2 below policy.min_slice_rows 300 rows)" in d.summary and "worst" not in d.summary
    first = decide(POLICY, "mae", GOOD, BASE, None, [], DRIFT)
    assert first.summary == "promote (first champion): MAE 11.90 vs naive baseline 20.00 (40.5% better; need ≥ 20%)"
    # a loss measured in tiny units keeps its digits (two decimals printed "MAE 0.00 vs naive baseline 0.00")
    tiny = decide(POLICY, "mae", {"mae": 2.12e-5, "rows": 168}, {"mae": 3.5e-5, "rows": 168}, None, [], DRIFT)
    assert tiny.summary.startswith(
        "promote (first champion): MAE 2.12e-05 vs naive baseline 3.5e-05 (39.4% better"), tiny.summary


def test_the_track_record_pools_weeks_with_their_spread():
    assert track_record([]) is None
    one = track_record([(-0.02, 0.01)])
    assert (one.gain, one.se, one.spread, one.weeks) == (-0.02, 0.01, 0.01, 1)
    pooled = track_record([(-0.03, 0.002), (-0.01, 0.002), (-0.02, 0.002), (float("nan"), 0.01)])
    assert pooled.weeks == 3 and pooled.gain == pytest.approx(-0.02)
    assert pooled.spread == pytest.approx(0.01)  # weeks differ by more than each week's own noise
    assert pooled.se == pytest.approx(0.01 / np.sqrt(3))


def test_policy_rejects_an_impossible_harm_risk():
    with pytest.raises(ConfigError, match="policy.harm_risk"):
        PolicyConfig(harm_risk=1.5)


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
     "accuracy 0.839 vs champion 0.851, ROC AUC 0.912 vs champion 0.905"),
    (log_loss_comp(0.03, 0.01, 0.05), {"log_loss": 0.40, "accuracy": 0.820}, REJECT,  # champion without an AUC
     "accuracy 0.839 vs champion 0.820, ROC AUC 0.912"),
    (log_loss_comp(-0.07, -0.09, -0.05), None, PROMOTE, "accuracy 0.839, ROC AUC 0.912"),
])
def test_classification_lines_report_accuracy_and_auc_while_log_loss_decides(comparison, champion, action, words):
    d = decide(POLICY, "log_loss", CAND, PRIOR, comparison, [], None, record=FRESH, champion=champion)
    assert d.action == action
    assert words in d.summary, d.summary
    assert any(r.startswith("accuracy 0.839") for r in d.reasons)


def test_a_classifier_failing_the_baseline_is_rejected_with_its_scores():
    d = decide(POLICY, "log_loss", {"log_loss": 0.60, "accuracy": 0.64}, PRIOR, None, [], None)  # multi-class: no AUC
    assert d.action == REJECT
    assert d.summary == ("reject: fails the absolute thresholds — log_loss 0.60 vs naive baseline 0.62 (3.2% better; "
                         "need ≥ 20%, policy.min_gain_vs_baseline); accuracy 0.640")


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


def test_an_empty_comparison_is_never_printed_as_evidence():
    # the candidate is the champion's own recipe on the champion's own data: identical predictions
    same = comp(0.0, 0.0, 0.0)
    d = decide(POLICY, "mae", GOOD, BASE, same, [], DRIFT, record=None)
    assert d.action == REJECT and d.evidence["empty_comparison"]
    assert "CI" not in d.summary and "nothing to compare" in d.summary
    assert "no track record of fresher data yet" in d.summary
    stale = decide(POLICY, "mae", GOOD, BASE, same, [], DRIFT, record=TrackRecord(0.007, 0.002, 0.004, 3))
    assert stale.action == REJECT and "+0.7% a week over 3 week(s)" in stale.summary
    fresh = decide(POLICY, "mae", GOOD, BASE, same, [], DRIFT, record=FRESH)
    assert fresh.action == PROMOTE and "nothing to compare" in fresh.summary and "CI" not in fresh.summary.split(";")[0]
    # a comparison that happens to be even, with an interval, is still shown as one
    assert "CI" in decide(POLICY, "mae", GOOD, BASE, SAME, [], DRIFT, record=None).summary


EMPTY = comp(0.0, 0.0, 0.0)  # the champion's own recipe on the champion's own data: identical predictions
WORSE_FRESH = TrackRecord(gain=0.03, se=0.005, spread=0.01, weeks=6)  # a week of newer data has cost 3 % a week


@pytest.mark.parametrize("record,drift", [(None, None), (FRESH, None), (TrackRecord(0.004, 0.003, 0.006, 5), DRIFT),
                                          (None, SHIFT), (FRESH, {"n_drifted": 9, "n_columns": 11,
                                                                  "share_drifted": 9 / 11})])
def test_the_same_recipe_on_one_more_week_is_served_unless_an_objection_stands(record, drift):
    # the default is the refit, as a weekly cron job would serve it: no track record, a track record within noise
    # of zero, or a drift alarm (a reason to retrain) do not keep the older model
    d = decide(POLICY, "mae", GOOD, BASE, EMPTY, [], drift, record=record, plan=REACHABLE, same_recipe=True)
    assert d.action == PROMOTE, d.reasons
    assert d.summary.startswith("promote (same recipe, one more week of data: ") and "no objection" in d.summary
    assert "CI" not in d.summary and d.evidence["question"] == "refit" and d.evidence["objections"] == []
    if drift and drift.get("target"):
        assert "the target shifted" in d.summary and "a reason to retrain" in " ".join(d.reasons)
    if record is None:
        assert "no track record yet" in d.summary
    else:
        assert f"over {record.weeks} weeks" in d.summary


def test_the_refit_is_held_when_a_week_of_newer_data_has_credibly_made_it_worse():
    d = decide(POLICY, "mae", GOOD, BASE, EMPTY, [], None, record=WORSE_FRESH, same_recipe=True)
    assert d.action == REJECT and d.summary.startswith("reject (held: the refit is expected to be worse: +3.0%")
    assert "track record +3.0% ± 0.5% over 6 weeks" in " ".join(d.reasons)
    # an older champion: the candidate's own comparison with it counts too (here clearly worse on the newest week)
    older = decide(POLICY, "mae", GOOD, BASE, comp(0.05, 0.03, 0.07), [], None, fresher_weeks=3, record=None,
                   same_recipe=True)
    assert older.action == REJECT and "+5.0% vs the champion on the newest week" in " ".join(older.reasons)
    even = decide(POLICY, "mae", GOOD, BASE, comp(0.01, -0.01, 0.03), [], None, fresher_weeks=3, record=None,
                  same_recipe=True)
    assert even.action == PROMOTE, even.reasons


def test_the_refit_still_meets_the_constraints_and_waits_for_a_running_experiment():
    fails = decide(POLICY, "mae", {"mae": 18.0, "rows": 10}, BASE, EMPTY, [], None, record=FRESH, same_recipe=True)
    assert fails.action == REJECT and "absolute thresholds" in fails.summary
    bad = [{"column": "origin", "slice": "EWR", "rows": 2000, "champion": 10, "candidate": 11, "rel_change": 0.10,
            "enforced": True}]
    older = comp(-0.01, -0.03, 0.01)
    assert decide(POLICY, "mae", GOOD, BASE, older, bad, None, fresher_weeks=2, same_recipe=True).action == REJECT
    running = {"id": "m-v5-vs-v4", "champion_version": "4", "challenger_version": "5", "planned_end": "2013-06-09"}
    held = decide(POLICY, "mae", GOOD, BASE, EMPTY, [], None, record=FRESH, running=running, same_recipe=True)
    assert held.action == HOLD
    # always_ab is the user's choice: the refit goes online too when an experiment can finish
    ab = decide(PolicyConfig(always_ab=True), "mae", GOOD, BASE, EMPTY, [], None, plan=REACHABLE, same_recipe=True)
    assert ab.action == AB_TEST
    # no newer data than the champion: the new-recipe rule (only a conclusive win) whatever the recipe
    same_window = decide(POLICY, "mae", GOOD, BASE, EMPTY, [], None, fresher_weeks=0, same_recipe=True)
    assert same_window.action == REJECT and "no newer data" in same_window.summary
