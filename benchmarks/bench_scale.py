"""The candidate search fanned out on Dask against the same candidates fitted one after another in one process.

On a copy of the project with its declared candidates (params.yaml `search`: six, all three families) and the
default week, after `dvc repro prepare`:
- sequential: the DVC stage's own path (stages.search.run_search), one process, one candidate after another;
- fan-out, fresh cluster: the weekly flow's `search-candidates` subflow as a weekly run calls it, on a local Dask
  cluster of `--workers` processes started for the run (start-up included), MLflow logging and `dvc commit`
  included;
- fan-out, running cluster: the same subflow on a cluster that was already up (given by address, as the stack's
  long-lived cluster or a shared one is).
Every side must choose the same candidate with the same validation scores. Target: sequential / fan-out >= 1.6x
with two workers on this 2-core machine. Timings are noisy here: each side runs `--reps` times, medians printed.

Run: `python benchmarks/bench_scale.py [--reps 3] [--workers 2]`; figures also in tests/out/bench_scale.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_project, run  # noqa: E402

TARGET = 1.6


def scaled(frame, k: int, params, seed: int = 0):
    """Each week's rows resampled k times with replacement, numeric features moved by a little noise (1 % of the
    column's standard deviation), so that k x the rows are not k copies of the same rows."""
    import numpy as np
    import pandas as pd

    if k == 1:
        return frame
    rng = np.random.default_rng(seed)
    s = params.source
    week = frame[s.time_column].dt.floor("7D")
    parts = [g.sample(n=len(g) * k, replace=True, random_state=int(rng.integers(2**31))) for _, g in
             frame.groupby(week, sort=True)]
    out = pd.concat(parts, ignore_index=True)
    for c in s.numeric_features:
        v = pd.to_numeric(out[c], errors="coerce")
        noise = rng.normal(0, 0.01 * float(v.std() or 0), len(out))
        out[c] = (v + noise).astype(v.dtype) if v.dtype.kind == "f" else v
    return out


def fanout(reps: int, workers: int, scale: int = 1) -> dict:
    import dataclasses

    import pandas as pd
    from distributed import LocalCluster
    from mlflow import MlflowClient
    from prefect import flow
    from prefect.client.orchestration import get_client

    from stages.common import load_params
    from stages.search import run_search
    from tasks import lineage
    from tasks.context import WeekRun
    from tasks.search import search_candidates, task_runner

    with tempfile.TemporaryDirectory() as tmp:
        repo = make_project(Path(tmp) / "repo", search=True)
        run(["dvc", "repro", "-q", "prepare"], repo)
        params = load_params(repo / "params.yaml")
        params = dataclasses.replace(params, search=dataclasses.replace(params.search, workers=workers))
        train = scaled(pd.read_parquet(repo / "data" / "prepared" / "train.parquet"), scale, params)
        train.to_parquet(repo / "data" / "prepared" / "train.parquet", index=False)  # what the subflow reads

        @flow(name="bench-fanout", persist_result=False)
        def bench() -> dict:
            exp = lineage.ensure_experiment(repo, "bench-scale")
            parent = MlflowClient().create_run(exp, run_name="bench").info.run_id
            ctx = WeekRun(project=repo, params=params, as_of=params.window.as_of, experiment_id=exp,
                          parent_run_id=parent)
            out: dict = {"sequential": [], "fresh cluster": [], "running cluster": []}
            docs = {}
            for _ in range(reps):
                t0 = time.perf_counter()
                docs["sequential"] = run_search(params, train, log=lambda _m: None)
                out["sequential"].append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                docs["fresh cluster"] = search_candidates.with_options(task_runner=task_runner(params))(ctx)
                out["fresh cluster"].append(time.perf_counter() - t0)

            api = str(get_client().api_url)
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                              env={"PREFECT_API_URL": api}) as cluster:
                warm = dataclasses.replace(params, search=dataclasses.replace(params.search,
                                                                              scheduler=cluster.scheduler_address))
                wctx = dataclasses.replace(ctx, params=warm)
                for _ in range(reps):
                    t0 = time.perf_counter()
                    docs["running cluster"] = search_candidates.with_options(task_runner=task_runner(warm))(wctx)
                    out["running cluster"].append(time.perf_counter() - t0)
            choices = {k: (d["chosen"], [(c["name"], round(c["value"], 9)) for c in d["candidates"]])
                       for k, d in docs.items()}
            fits = {c["name"]: c["value"] for c in docs["sequential"]["candidates"]}
            return {"seconds": out, "choices": choices, "candidates": list(fits)}

        r = bench()
    med = {k: statistics.median(v) for k, v in r["seconds"].items()}
    same = len({json.dumps(c) for c in r["choices"].values()}) == 1
    return {"scale": scale, "rows": len(train), "workers": workers, "reps": reps, "candidates": r["candidates"],
            "seconds": r["seconds"],
            "median_seconds": med, "speedup": {k: med["sequential"] / med[k] for k in med if k != "sequential"},
            "same_choice": same, "chosen": r["choices"]["sequential"][0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scales", default="1,3", help="the training window's rows x these (resampled week by week)")
    ap.add_argument("--out", default=str(ROOT / "tests" / "out" / "bench_scale.json"))
    args = ap.parse_args(argv)
    results = []
    for k in (int(x) for x in args.scales.split(",")):
        r = fanout(args.reps, args.workers, k)
        results.append(r)
        print(f"\ncandidate search, {len(r['candidates'])} candidates ({', '.join(r['candidates'])}), default week "
              f"at {k}x rows ({r['rows']:,} in the training window); median of {args.reps}")
        print(f"  {'side':<44} {'seconds':>8} {'speed-up':>9}")
        print(f"  {'one after another, one process (dvc repro)':<44} {r['median_seconds']['sequential']:>8.1f} "
              f"{'1.00x':>9}")
        for side in ("fresh cluster", "running cluster"):
            label = f"fan-out, {args.workers} workers, {side}"
            print(f"  {label:<44} {r['median_seconds'][side]:>8.1f} {r['speedup'][side]:>8.2f}x"
                  f"   (target >= {TARGET}x)")
        print(f"  same choice and scores on every side: {'yes' if r['same_choice'] else 'NO'} ({r['chosen']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"fanout": results}, indent=1))
    print(f"figures in {out}")
    return 0 if all(r["same_choice"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
