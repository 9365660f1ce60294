"""ml.drift.drift_summary vs Evidently's default DataDriftPreset on the same reference/current frames.

Builds flight-like data (default 1M rows x 20 columns: 16 numeric, 4 categorical, a few shifted in current, some
NaN; fixed seed), times both in the same process, prints the speed-up (target >= 10x) and whether every
per-column verdict agrees. Not a test: no timing assertions.
Run: `python benchmarks/bench_drift.py` (or `--rows 200000 --columns 12` for a quick look).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.drift import drift_summary  # noqa: E402

CARRIERS = np.array(["UA", "B6", "EV", "DL", "AA", "MQ", "US", "9E", "WN", "VX", "FL", "AS", "F9", "YV", "HA", "OO"])
DESTS = np.array([f"D{i:03d}" for i in range(100)])


def _missing(rng, values: np.ndarray, share: float) -> np.ndarray:
    """Blank out about `share` of the values (as NaN / None)."""
    values = values.astype(float) if values.dtype.kind in "iub" else values.copy()
    values[rng.random(values.size) < share] = np.nan if values.dtype.kind == "f" else None
    return values


# name -> (kind, maker(rng, rows, shifted)); `shifted` is True only for current, and only some makers use it
COLUMNS = {
    "dep_delay": ("num", lambda r, n, s: _missing(r, np.where(r.random(n) < 0.7, r.normal(-3, 4, n),
                                                              r.exponential(45 if s else 30, n)), 0.02)),
    "distance": ("num", lambda r, n, s: r.lognormal(6.7, 0.6, n).round()),
    "air_time": ("num", lambda r, n, s: _missing(r, r.lognormal(4.8, 0.55, n).round(), 0.02)),
    "sched_hour": ("num", lambda r, n, s: r.integers(5, 24, n)),
    "temp": ("num", lambda r, n, s: r.normal(68 if s else 56, 17, n)),
    "dewp": ("num", lambda r, n, s: r.normal(48 if s else 41, 19, n)),
    "humid": ("num", lambda r, n, s: 100 * r.beta(4, 3, n)),
    "wind_speed": ("num", lambda r, n, s: _missing(r, r.gamma(3, 3.5, n), 0.01)),
    "wind_gust": ("num", lambda r, n, s: _missing(r, r.gamma(6, 4, n), 0.7)),
    "precip": ("num", lambda r, n, s: np.where(r.random(n) < (0.15 if s else 0.07), r.exponential(0.1, n), 0.0)),
    "pressure": ("num", lambda r, n, s: _missing(r, r.normal(1017.9, 7.5, n), 0.1)),
    "visib": ("num", lambda r, n, s: np.minimum(10.0, r.exponential(25, n)).round(1)),
    "seats": ("num", lambda r, n, s: r.choice([50, 55, 76, 95, 100, 140, 149, 178, 182, 191, 200, 330], n)),
    "plane_age": ("num", lambda r, n, s: _missing(r, r.gamma(2, 6, n).round(), 0.05)),
    "taxi_out": ("num", lambda r, n, s: r.gamma(4, 5.5 if s else 4, n)),
    "load_factor": ("num", lambda r, n, s: r.beta(8, 2, n)),
    "carrier": ("cat", lambda r, n, s: r.choice(CARRIERS, n, p=_zipf(len(CARRIERS), 1.5 if s else 1.0))),
    "origin": ("cat", lambda r, n, s: r.choice(["EWR", "JFK", "LGA"], n, p=[0.36, 0.33, 0.31])),
    "dest": ("cat", lambda r, n, s: _missing(r, r.choice(DESTS, n, p=_zipf(len(DESTS), 0.9)).astype(object), 0.01)),
    "is_weekend": ("cat", lambda r, n, s: r.choice(["no", "yes"], n, p=[0.72, 0.28])),
}


def _zipf(k: int, a: float) -> np.ndarray:
    """Category shares falling off like 1 / rank**a."""
    weights = 1.0 / np.arange(1, k + 1) ** a
    return weights / weights.sum()


def pick_columns(n_columns: int) -> list[tuple[str, str, str]]:
    """(name, kind, template) for n columns, keeping the 16:4 numeric:categorical mix (templates reused past 20)."""
    numeric = [c for c, (kind, _) in COLUMNS.items() if kind == "num"]
    categorical = [c for c, (kind, _) in COLUMNS.items() if kind == "cat"]
    n_cat = max(1, round(n_columns / 5)) if n_columns > 1 else 0
    chosen = [(numeric[i % len(numeric)], "num") for i in range(n_columns - n_cat)]
    chosen += [(categorical[i % len(categorical)], "cat") for i in range(n_cat)]
    seen: dict[str, int] = {}
    out = []
    for template, kind in chosen:
        seen[template] = seen.get(template, 0) + 1
        name = template if seen[template] == 1 else f"{template}_{seen[template]}"
        out.append((name, kind, template))
    return out


def build(rows: int, n_columns: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """Reference and current frames of `rows` rows each; current has the shifted variants."""
    rng = np.random.default_rng(seed)
    columns = pick_columns(n_columns)
    frames = []
    for shifted in (False, True):
        frames.append(pd.DataFrame({name: COLUMNS[template][1](rng, rows, shifted)
                                    for name, _, template in columns}))
    numeric = [name for name, kind, _ in columns if kind == "num"]
    categorical = [name for name, kind, _ in columns if kind == "cat"]
    return frames[0], frames[1], numeric, categorical


def evidently_verdicts(reference, current, numeric, categorical) -> dict:
    """Per-column (label, score, drifted) and the drifted share from Evidently's default DataDriftPreset."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition))
    result = snapshot.dict()
    columns, share = {}, None
    for metric in result["metrics"]:
        if metric["config"]["type"].endswith("ValueDrift"):
            columns[metric["config"]["column"]] = {"label": metric["config"]["method"],
                                                   "score": float(metric["value"])}
        else:
            share = float(metric["value"]["share"])
    for test in result["tests"]:
        if test["id"] == "drift":
            columns[test["metric_config"]["params"]["column"]]["drifted"] = str(test["status"]).endswith("FAIL")
    return {"columns": columns, "share": share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    reference, current, numeric, categorical = build(args.rows, args.columns, args.seed)
    print(f"data: {args.rows:,} rows x {args.columns} columns per side ({len(numeric)} numeric, "
          f"{len(categorical)} categorical), built in {time.perf_counter() - t0:.1f} s")
    import evidently  # noqa: F401  (import cost, ~4 s, kept out of both timings)
    import scipy.spatial.distance  # noqa: F401
    import scipy.stats  # noqa: F401

    t0 = time.perf_counter()
    ours = drift_summary(reference, current, numeric, categorical)
    fast_s = time.perf_counter() - t0
    print(f"drift_summary:            {fast_s:8.2f} s")

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = evidently_verdicts(reference, current, numeric, categorical)
    slow_s = time.perf_counter() - t0
    print(f"Evidently DataDriftPreset: {slow_s:8.2f} s")
    print(f"speed-up:                 {slow_s / fast_s:8.1f}x (target >= 10x)")

    print(f"\n{'column':<14} {'method':<30} {'ours':>12} {'evidently':>12} {'drift':>6} {'agree':>6}")
    disagreements, max_rel = 0, 0.0
    for column, ev in theirs["columns"].items():
        mine = ours["columns"][column]
        agree = mine["drifted"] == ev["drifted"] and mine["method_label"] == ev["label"]
        disagreements += not agree
        rel = abs(mine["statistic"] - ev["score"]) / max(abs(ev["score"]), 1e-300)
        max_rel = max(max_rel, rel if ev["score"] or mine["statistic"] else 0.0)
        print(f"{column:<14} {mine['method_label']:<30} {mine['statistic']:12.6g} {ev['score']:12.6g} "
              f"{str(mine['drifted']):>6} {str(agree):>6}")
    n = len(theirs["columns"])
    print(f"\nverdicts agree: {n - disagreements}/{n} columns; max relative difference of statistics: {max_rel:.2e}")
    print(f"drifted share: ours {ours['share_drifted']:.3f}, evidently {theirs['share']:.3f}; "
          f"dataset drift (share >= {ours['drift_share']}): {ours['dataset_drift']}")


if __name__ == "__main__":
    main()
