"""Calibrated drift alarms on every real week of the three shared datasets: how often an ordinary week raises an
alarm, and how often a week with an injected shift does - against Evidently's default flags on the same weeks.

Each week is judged as the weekly flow judges it: a model of the project's own family is fitted on the training
window (the `window.train_weeks` weeks before the week), features, target and its predictions of the new week are
tested against that window, and the calibrated null comes from the `drift.history_weeks` weeks before the new
week (as if landed). nycflights13 uses the project's params.yaml; bike sharing and Beijing air quality the params
`cli.init` writes for them (bench_gate.datasets). A week counts when it has a full training window before it,
at least `validation.min_rows` rows and enough past weeks to calibrate on.

Injected shifts, one of each per week (seeded): a numeric feature rescaled x1.6 and the target shifted by one
standard deviation of the reference (bench_gate.injections), the hour of day moved 5 hours (the source's
calendar hour, recomputed from timestamps shifted 5 hours, or the feature that follows the time column's hour;
n/a in a daily feed), the two most frequent categories of a categorical feature swapped (n/a without categorical
features).

An alarm = the target, the predictions or the model's errors flagged, or a feature FAR (5) times beyond its
bound or empty (ml.calibration); "any drift" = any column flagged, the alarm before it had to reach the model or
go that far (the same weeks, for comparison). The model's errors: its
residuals on the week against those on the history weeks older than its own training window (out of sample for
it; ml.calibration.ResidualNull). Evidently's baseline: any of its default per-column verdicts
(ml.drift.drift_summary) on the same columns and weeks.

Run: `python benchmarks/bench_alarms.py [--max-weeks N] [--datasets a,b]`; figures also go to
tests/out/bench_alarms.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gate import datasets, injections  # noqa: E402

PRED = "prediction"
SHIFTS = ("feature x1.6", "target + 1 sd", "hour + 5 h", "category swap")
TARGETS = {"normal": "<= 10%", **{k: ">= 95%" for k in SHIFTS}}


def eligible_weeks(frame: pd.DataFrame, params) -> list:
    """as_of dates of every week with a full training window of history before it (as bench_gate iterates)."""
    s, n = params.source, params.window.train_weeks
    first, last = frame[s.time_column].min().date(), frame[s.time_column].max().date()
    as_of = params.window.as_of
    while as_of - timedelta(days=7 * (n + 1)) >= first:
        as_of -= timedelta(days=7)
    out = []
    while as_of <= last:
        out.append(as_of)
        as_of += timedelta(days=7)
    return out


def hour_shift(batch: pd.DataFrame, reference: pd.DataFrame, params,
               hours: int = 5) -> tuple[str, pd.DataFrame] | None:
    """The week with its hour of day moved: timestamps shifted and the calendar recomputed when the source derives
    an hour (`source.calendar`), else the numeric feature that follows the time column's hour (in whole hours, up
    to a time-zone offset and its daylight-saving change) shifted mod 24; None when neither (a daily feed)."""
    from ml.sources import calendar_columns

    s = params.source
    if "hour" in s.calendar:
        moved = batch[s.time_column] + pd.Timedelta(hours=hours)
        return "cal_hour", batch.assign(**calendar_columns(moved, s.calendar, s.timezone))
    utc_hour = reference[s.time_column].dt.hour
    best, share = None, 0.0
    for c in s.numeric_features:
        v = pd.to_numeric(reference[c], errors="coerce")
        if not v.between(0, 23).all() or not (v == v.round()).all():
            continue
        offset = (v - utc_hour) % 24  # one offset a day, two across a daylight-saving change
        agree = float(offset.value_counts(normalize=True).iloc[:2].sum())
        if agree > share:
            best, share = c, agree
    if best is None or share < 0.95:
        return None
    return best, batch.assign(**{best: (batch[best] + hours) % 24})


def category_swap(batch: pd.DataFrame, params, rng) -> tuple[str, pd.DataFrame] | None:
    """A random categorical feature with its week's two most frequent categories swapped."""
    cats = list(params.source.categorical_features)
    if not cats:
        return None
    c = cats[rng.integers(len(cats))]
    top = batch[c].value_counts().index[:2]
    if len(top) < 2:
        return None
    a, b = top
    return c, batch.assign(**{c: batch[c].where(~batch[c].isin([a, b]), batch[c].map({a: b, b: a}))})


def bound_only(summary: dict) -> bool:
    """The alarm as it was before a stepping feature was exempt and a drift had to be material (MIN_SHIFT): any
    column beyond its bound, an empty side, or the model's errors - the same weeks, for comparison."""
    from ml.calibration import RESIDUAL

    entries = [*summary["columns"].values(), *(summary[r] for r in ("target", "prediction") if r in summary)]
    beyond = any(e["statistic"] is None or (e["threshold"] is not None and e["statistic"] > e["threshold"])
                 for e in entries)
    return beyond or bool(summary.get(RESIDUAL, {}).get("drifted"))


def run(name: str, params, history_weeks: int, alpha: float, max_weeks: int | None, refit_weeks: int) -> dict:
    from ml.calibration import MIN_NULL_WEEKS, RESIDUAL, alarm_summary, any_drift, learn_null, weeks_of
    from ml.drift import drift_summary
    from ml.models import build_model
    from ml.sources import load_source
    from ml.split import week_bounds

    s, n = params.source, params.window.train_weeks
    frame = load_source(s, ROOT)
    times = frame[s.time_column]
    features = [*s.numeric_features, *s.categorical_features]
    kinds = {c: "numerical" for c in s.numeric_features} | {c: "categorical" for c in s.categorical_features}
    kinds[s.target] = "numerical" if s.task == "regression" else "categorical"
    kinds[PRED] = "numerical"
    weeks = eligible_weeks(frame, params)
    weeks = weeks[:: max(1, len(weeks) // max_weeks)][:max_weeks] if max_weeks else weeks
    rng = np.random.default_rng(0)
    model, fitted, predicted = None, 0, None
    cal, evi, bare = Counter(), Counter(), Counter()  # alarms per kind of week (bare: bound_only)
    anyc = Counter()  # any column flagged (the alarm before it had to reach the model or go FAR beyond its bound)
    cal_col, evi_col = Counter(), Counter()  # the shifted column itself flagged
    res_flag, other_flag = Counter(), Counter()  # the model's errors flagged; any other column flagged
    model_flag = Counter()  # the target, the predictions or the model's errors flagged (features alone: not)
    tried, false_cols, null_sizes, shifted_cols, res_sizes = Counter(), Counter(), [], Counter(), []
    for w in weeks:
        start, end = week_bounds(w)
        lo, mid, hi = np.searchsorted(times.to_numpy(), [start - pd.Timedelta(days=7 * (history_weeks + n)),
                                                         start, end])
        hist, batch = frame.iloc[lo:mid].reset_index(drop=True), frame.iloc[mid:hi].reset_index(drop=True)
        rel = weeks_of(hist[s.time_column], start)
        window = hist[rel >= -n]
        if len(batch) < params.validation.min_rows or window.empty:
            continue
        # a model serves `refit_weeks` weeks, as a champion does
        if model is None or fitted >= refit_weeks or hi > predicted.index[-1] + 1:
            train = window[window[s.target].notna()]
            model, fitted = build_model(s, params.train).fit(train, train[s.target]), 0
            model_start = start - pd.Timedelta(days=7 * n)  # weeks before it are out of sample for the model
            span = slice(lo, np.searchsorted(times.to_numpy(), end + pd.Timedelta(days=7 * refit_weeks)))
            predicted = pd.Series(model.predict(frame.iloc[span]), index=frame.index[span])
        fitted += 1
        hist[PRED] = predicted.iloc[lo - predicted.index[0]:mid - predicted.index[0]].to_numpy()
        residuals = pd.to_numeric(hist[s.target], errors="coerce").to_numpy(dtype=float) - hist[PRED].to_numpy()
        null = learn_null(hist, rel, kinds, window=n, alpha=alpha, max_weeks=history_weeks, residuals=residuals,
                          residual_before=int(np.floor((model_start - start) / pd.Timedelta(days=7))))
        if len(null.null_weeks) < MIN_NULL_WEEKS:
            continue
        null_sizes.append(len(null.null_weeks))
        res_sizes.append(len(null.residual.weeks))
        variants = {"normal": (None, batch)}
        broken = injections(batch, null.reference, params, rng)
        col = next(c for c in features if not batch[c].equals(broken["feature x1.6"][c]))
        variants["feature x1.6"] = (col, broken["feature x1.6"])
        if "target + 1 sd" in broken:
            variants["target + 1 sd"] = (s.target, broken["target + 1 sd"])
        if shifted := hour_shift(batch, null.reference, params):
            variants["hour + 5 h"] = shifted
        swap = category_swap(batch, params, rng)
        if swap:
            variants["category swap"] = swap
        for kind, (column, v) in variants.items():
            v = v.copy()
            v[PRED] = predicted.iloc[mid - predicted.index[0]:hi - predicted.index[0]].to_numpy() \
                if kind in ("normal", "target + 1 sd") else model.predict(v)  # the target is not an input
            res = pd.to_numeric(v[s.target], errors="coerce").to_numpy(dtype=float) - v[PRED].to_numpy()
            summary = alarm_summary(null, v, features, target=s.target, prediction=PRED, residuals=res)
            ev = drift_summary(null.reference, v, [c for c in kinds if kinds[c] == "numerical"],
                               [c for c in kinds if kinds[c] == "categorical"])["columns"]
            tried[kind] += 1
            cal[kind] += summary["alarm"]
            bare[kind] += bound_only(summary)
            anyc[kind] += any_drift(summary)
            res_flag[kind] += summary[RESIDUAL]["drifted"]
            model_flag[kind] += any(summary[r]["drifted"] for r in ("target", "prediction", RESIDUAL))
            other_flag[kind] += bool(summary["n_drifted"]) or summary["target"]["drifted"] \
                or summary["prediction"]["drifted"]
            evi[kind] += any(e["drifted"] for e in ev.values())
            if kind == "normal":  # what raised the alarm on an ordinary week (`alarmed`: target, prediction, ...)
                false_cols.update(summary["alarmed"])
            else:
                shifted_cols[f"{kind}: {column}"] += 1
                flag = summary["target"] if column == s.target else summary["columns"][column]
                cal_col[kind] += flag["drifted"]
                evi_col[kind] += ev[column]["drifted"]
    return {"dataset": name, "weeks": tried["normal"], "null_weeks": [min(null_sizes), int(np.median(null_sizes)),
                                                                        max(null_sizes)] if null_sizes else None,
            "residual_null_weeks": [min(res_sizes), int(np.median(res_sizes)), max(res_sizes)] if res_sizes else None,
            "rates": {k: {"n": tried[k], "calibrated": cal[k] / tried[k], "evidently": evi[k] / tried[k],
                          "bound_only": bare[k] / tried[k], "any_drift": anyc[k] / tried[k],
                          "residual": res_flag[k] / tried[k], "without_residual": other_flag[k] / tried[k],
                          "model": model_flag[k] / tried[k],
                          **({"calibrated_on_column": cal_col[k] / tried[k],
                              "evidently_on_column": evi_col[k] / tried[k]} if k != "normal" else {})}
                      for k in ("normal", *SHIFTS) if tried[k]},
            "false_alarm_columns": dict(false_cols.most_common()), "shifted_columns": dict(shifted_cols)}


def main(argv: list[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    from ml.config import DriftConfig

    d = DriftConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-weeks", type=int, help="at most this many weeks per dataset, evenly spaced")
    ap.add_argument("--datasets", help="comma-separated subset of nycflights13,bike_sharing,beijing_air")
    ap.add_argument("--history-weeks", type=int, default=d.history_weeks)
    ap.add_argument("--alpha", type=float, default=d.alarm_rate)
    ap.add_argument("--refit-weeks", type=int, default=4, help="fit a new model every this many weeks")
    ap.add_argument("--out", default=str(ROOT / "tests" / "out" / "bench_alarms.json"))
    ap.add_argument("--data", help="your own files instead (the cli.init flag; other init flags pass through)")
    ap.add_argument("--target", help="with --data: the column to predict (or 'column>value')")
    args, extra = ap.parse_known_args(argv)
    wanted = set(args.datasets.split(",")) if args.datasets and not args.data else None
    results = []
    for name, params in datasets(args.data, args.target, extra).items():
        if wanted and name not in wanted:
            continue
        t0 = time.perf_counter()
        with threadpool_limits(params.train.threads or None):  # as the train stage fits
            r = run(name, params, args.history_weeks, args.alpha, args.max_weeks, args.refit_weeks)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(r)
        print(f"\n{name}: {r['weeks']} weeks, null from {r['null_weeks']} past weeks, the model's errors from "
              f"{r['residual_null_weeks']} out-of-sample weeks (min, median, max), {r['seconds']} s")
        print(f"  {'week':<15} {'n':>4} {'calibrated':>11} {'any drift':>10} {'bound only':>11} {'Evidently':>10} "
              f"{'target':>7} "
              f"{'errors':>7} "
              f"{'others':>7} {'model':>7}"
              "   on the shifted column (calibrated / Evidently)")
        for kind in ("normal", *SHIFTS):
            x = r["rates"].get(kind)
            if x is None:
                print(f"  {kind:<15} {'':>4} {'n/a':>11} {'n/a':>10} {'n/a':>11} {'n/a':>10} {TARGETS[kind]:>7}")
                continue
            col = (f"   {x['calibrated_on_column']:6.1%} / {x['evidently_on_column']:6.1%}" if kind != "normal"
                   else "")
            print(f"  {kind:<15} {x['n']:>4} {x['calibrated']:>11.1%} {x['any_drift']:>10.1%} {x['bound_only']:>11.1%} "
                  f"{x['evidently']:>10.1%} {TARGETS[kind]:>7} "
                  f"{x['residual']:>7.1%} {x['without_residual']:>7.1%} {x['model']:>7.1%}{col}")
        print(f"  columns behind calibrated false alarms: {r['false_alarm_columns'] or '-'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"history_weeks": args.history_weeks, "alpha": args.alpha, "results": results},
                              indent=1))
    print(f"\nalarm (calibrated) = the target, the predictions or the model's errors flagged, or a feature FAR "
          f"times beyond its bound or empty (family-wise alpha {args.alpha:g}; a stepping feature exempt, a drift at "
          f"least MIN_SHIFT); any drift = any column flagged, the alarm before it had to reach the model or go that "
          f"far; bound only = any column beyond its bound, as before the stepping and MIN_SHIFT rules (same weeks); "
          f"errors = the model's errors flagged; others = any "
          f"other column flagged; "
          f"model = the target, the predictions or the model's errors flagged; Evidently = any default per-column "
          f"flag; figures in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
