"""Joint checks on real 2013 flights weeks: an ordinary week passes; a time feature shifted by 5 hours, a feature
in other units, a frozen feed, a delivery sent twice and a target redefined (x1.5) are each flagged, naming what
broke (the target's check warns, the others hold the week); each check is judged against the same statistic on the
past weeks."""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.faults import hour_column, inject, units_column
from ml.config import parse_params
from ml.joint import MIN_NULL_WEEKS, JointFlag, at_bounds, describe, judge, week_statistics
from ml.sources import load_source
from ml.split import slice_week

ROOT = Path(__file__).resolve().parents[2]
PARAMS = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
S = PARAMS.source
WEEK = date(2013, 10, 6)


def reference(frame: pd.DataFrame, w: date) -> pd.DataFrame:
    return pd.concat([slice_week(frame, S.time_column, w - timedelta(days=7 * k))
                      for k in range(1, PARAMS.window.train_weeks + 1)], ignore_index=True)


@pytest.fixture(scope="module")
def flights():
    """The source frame, the week, its reference and the statistics of the 12 weeks before it (the null)."""
    frame = load_source(S, ROOT)
    past = [week_statistics(reference(frame, w), slice_week(frame, S.time_column, w), S, seed=k)
            for k, w in enumerate(WEEK - timedelta(days=7 * k) for k in range(12, 0, -1))]
    return frame, slice_week(frame, S.time_column, WEEK), reference(frame, WEEK), past


def test_an_ordinary_week_passes_every_joint_check(flights):
    _, week, ref, past = flights
    flags = judge(week_statistics(ref, week, S), past, PARAMS.drift.alarm_rate)
    assert flags and not any(f.flagged for f in flags), describe(flags)
    assert {f.check for f in flags} >= {"relation:dep_delay", "relation:hour", "target:arr_delay", "duplicates"}
    assert all(f.threshold is not None for f in flags)


@pytest.mark.parametrize("kind,words,holds", [
    ("time shift", "'hour' no longer follows from the other columns and the time", True),
    # departure delays in other units: x2.1 on this week's relation (below the 2.5 a hold needs), but the arrival
    # delays no longer follow from them
    ("units", "the target 'arr_delay' no longer follows from the features", False),
    ("frozen", "of the rows are repeated", True),
    ("duplicates", "100% of the rows are repeated", True),
    ("target redefined", "the target 'arr_delay' no longer follows from the features", False),
])
def test_each_injected_fault_is_flagged_in_words(flights, kind, words, holds):
    frame, week, ref, past = flights
    assert hour_column(PARAMS, frame) == "hour" and units_column(PARAMS, frame) == "dep_delay"
    broken = inject(kind, week, PARAMS, frame)
    flags = judge(week_statistics(ref, broken, S), past, PARAMS.drift.alarm_rate)
    assert any(f.flagged for f in flags), kind
    assert words in describe(flags), describe(flags)
    assert any(f.holds for f in flags) == holds, describe(flags)


def test_without_enough_past_weeks_nothing_is_judged(flights):
    _, week, ref, past = flights
    broken = week_statistics(ref, pd.concat([week, week], ignore_index=True), S)
    flags = judge(broken, past[: MIN_NULL_WEEKS - 1], PARAMS.drift.alarm_rate)
    assert not any(f.flagged for f in flags) and all(f.threshold is None for f in flags)


def test_a_week_is_checked_from_the_accepted_history_as_the_flow_does(flights):
    """check_week builds each past week's reference and the null from the rows before the week, by itself."""
    from ml.contract import accepted_history
    from ml.joint import check_week

    frame, week, _, _ = flights
    n = PARAMS.window.train_weeks
    history = accepted_history(frame, S.time_column, WEEK, 12 + n)
    ok = check_week(history, week, WEEK, S, n, PARAMS.drift.alarm_rate)
    assert ok.judged and not ok.held and (ok.null_weeks, ok.reference_weeks) == (12, n), ok.summary()
    assert "the columns relate as before" in ok.summary()
    shifted = check_week(history, inject("time shift", week, PARAMS, frame), WEEK, S, n, PARAMS.drift.alarm_rate)
    assert shifted.held and "'hour' no longer follows" in shifted.summary()
    assert shifted.broken_features == ("hour",) and ok.broken_features == ()  # it trains later without 'hour'
    # duplicated rows spoil the whole week: it stays out of training
    doubled = check_week(history, inject("duplicates", week, PARAMS, frame), WEEK, S, n, PARAMS.drift.alarm_rate)
    assert doubled.held and doubled.broken_features == ()
    # weeks that were held still calibrate the bounds, at the bounds they crossed: these crossed none
    held = {WEEK - timedelta(days=7 * k) for k in range(1, 4)}
    rest = check_week(history, week, WEEK, S, n, PARAMS.drift.alarm_rate, not_null=held)
    assert rest.null_weeks == 12 and [f.null for f in rest.flags] == [f.null for f in ok.flags]
    # with fewer past weeks than a bound needs, nothing is judged, and the verdict says so
    short = accepted_history(frame, S.time_column, WEEK, MIN_NULL_WEEKS)
    few = check_week(short, week, WEEK, S, n, PARAMS.drift.alarm_rate)
    assert few.null_weeks == MIN_NULL_WEEKS - 1 and not few.judged and not few.held
    assert f"not judged yet: {MIN_NULL_WEEKS - 1} past week(s) measured, {MIN_NULL_WEEKS} needed" in few.summary()


def test_a_change_that_lasts_past_the_held_weeks_is_taken_as_the_new_normal(flights):
    """A week is held at most `hold_weeks` weeks in a row: flagged again right after them, it trains (an hour
    column moved for good is held once, then learned), and the verdict says so; a flagged week after an ordinary
    week, or after fewer held weeks than allowed, is held."""
    from ml.contract import accepted_history
    from ml.joint import check_week

    frame, week, _, _ = flights
    n = PARAMS.window.train_weeks
    history = accepted_history(frame, S.time_column, WEEK, 12 + n)
    broken = inject("time shift", week, PARAMS, frame)
    before = WEEK - timedelta(days=7)

    def verdict(held: set, hold_weeks: int = 1):
        return check_week(history, broken, WEEK, S, n, PARAMS.drift.alarm_rate, not_null=held, hold_weeks=hold_weeks)

    first = verdict(set())
    assert first.held and not first.lasting_since and "'hour' no longer follows" in first.summary()
    lasting = verdict({before})
    assert lasting.flagged and not lasting.held and lasting.lasting_since == (before,)
    assert "taken as the new normal" in lasting.summary() and "'hour' no longer follows" in lasting.summary()
    assert verdict({before}, hold_weeks=2).held  # one held week, two allowed: held again
    assert verdict({before - timedelta(days=7)}).held  # the week before it was not held: no streak


def test_a_small_week_is_held_for_repeated_rows_only_a_whole_pair_past_its_bound_or_all_repeated():
    """Five trading days of split-adjusted stock prices repeat from day to day: the null below is the duplicates
    statistic of the 12 weeks before an ordinary 1989 week of pmdarima's daily MSFT prices, which repeated 80 % of
    its rows against a bound of 78 % and was held. One more repeated pair moves a 5-row week by 40 points; an
    hourly week's share moves in steps under 1.2 points, so it is judged as before."""
    past = [{"duplicates": x} for x in (0.5, 0.4, 0.0, 0.4, 0.0, 0.4, 0.0, 0.5, 0.4, 0.0, 0.0, 0.0)]

    def held(share: float, rows: int | None) -> bool:
        (flag,) = judge({"duplicates": share}, past, PARAMS.drift.alarm_rate, rows=rows)
        assert 0.7 < flag.threshold < 0.8
        return flag.holds

    assert not held(0.8, rows=5)  # one pair past the bound: an ordinary week
    assert held(1.0, rows=5)  # every row repeated: a frozen feed or a delivery sent twice
    assert held(0.8, rows=2000) and held(0.8, rows=None)  # a large week (or no count given) as before


def test_a_held_week_calibrates_later_weeks_at_the_bounds_it_crossed():
    """A unit change of x800 in the null would widen a bound for months; left out, the null loses its tail and holds
    more ordinary weeks. At the bound it crossed, it does neither; a check without a bound yet is left out."""
    flags = [JointFlag("relation:a", 6.7, 0.9, (), True), JointFlag("relation:b", 0.1, 0.9, (), False),
             JointFlag("duplicates", 0.0, None, (), False)]
    assert at_bounds({"relation:a": 6.7, "relation:b": 0.1, "duplicates": 0.0}, flags) == {"relation:a": 0.9,
                                                                                            "relation:b": 0.1}


def test_the_target_check_warns_and_never_holds():
    from ml.joint import JointVerdict

    warned = JointVerdict((JointFlag("target:y", 0.5, 0.2, (), True), JointFlag("relation:a", 0.1, 0.9, (), False)),
                          12, 8)
    assert warned.warned and not warned.flagged and not warned.held
    assert warned.summary().startswith("trains, with a warning: the target 'y' no longer follows")
