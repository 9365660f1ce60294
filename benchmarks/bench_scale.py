"""How the weekly run's cost grows with the data, and the candidate search fanned out on Dask.

Sizes (`--sizes 1,3,10`): the default week's data at 1x, 3x and 10x the rows (every real week resampled with
replacement, numeric features moved by 1 % of their standard deviation, unit ids kept unique), given to a copy of
the project as a `files` source (search off: one recipe, as the bare script fits). A real `prefect server` runs
throughout. At each size, after a first week has registered a champion (untimed):
- flow: `python -m flows.weekly_retrain --as-of W` (validate, dvc repro, log, compare, drift, decide, register);
- bare: one script, same data: read the landed window, fit the candidate and its refit with the project's model
  code, the naive median, and score candidate, baseline and champion on the newest week.
Wall time and peak memory (RSS summed over the process and all its children, sampled every 0.1 s) of each.
Targets: flow/bare <= 1.3x at 1x and <= 1.1x at 10x; time and memory growing no faster than the rows; peak
memory at 10x <= 8 GiB.

Fan-out:
On a copy of the project with six candidates of all three families (ml.search.EXAMPLE) and the default week,
after `dvc repro prepare`:
- sequential: the DVC stage's own path (stages.search.run_search), one process, one candidate after another;
- fan-out, fresh cluster: the weekly flow's `search-candidates` subflow as a weekly run calls it, on a local Dask
  cluster of `--workers` processes started for the run (start-up included), MLflow logging and `dvc commit`
  included;
- fan-out, running cluster: the same subflow on a cluster that was already up (given by address, as the stack's
  long-lived cluster or a shared one is).
Every side must choose the same candidate with the same validation scores. Target: sequential / fan-out >= 1.6x
with two workers on this 2-core machine. Timings are noisy here: each side runs `--reps` times, medians printed.

Run: `python benchmarks/bench_scale.py [--sizes 1,3,10] [--scales 1,3] [--reps 3] [--workers 2]`
(`--sizes ''` or `--scales ''` skips a part); figures also in tests/out/bench_scale.json.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from tests.conftest import make_project, run  # noqa: E402

TARGET = 1.6
WEEKS = ("2013-05-26", "2013-06-02")  # the first registers the champion (untimed), the second is measured
BARE = r'''
import sys, glob, numpy as np, pandas as pd
sys.path.insert(0, ".")
from stages.common import load_params
from ml.models import build_model, build_baseline
import mlflow
p = load_params("params.yaml"); s, n = p.source, p.window.train_weeks
as_of = sys.argv[1]
files = sorted(f for f in glob.glob("data/raw/*.parquet") if f.split("/")[-1] < as_of)[-n:]
train = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
hold = pd.read_parquet(f"data/raw/{as_of}.parquet")
refit = pd.concat([pd.concat([pd.read_parquet(f) for f in files[1:]]), hold], ignore_index=True)
y = hold[s.target].to_numpy()
m = build_model(s, p.train).fit(train, train[s.target].to_numpy())
r = build_model(s, p.train).fit(refit, refit[s.target].to_numpy())
b = build_baseline(s).fit(train, train[s.target].to_numpy())
mlflow.set_tracking_uri(sys.argv[2])
champ = mlflow.sklearn.load_model(f"models:/{p.registry.model_name}@champion")
print("bare: candidate", np.abs(m.predict(hold) - y).mean(), "baseline", np.abs(b.predict(hold) - y).mean(),
      "champion", np.abs(champ.predict(hold) - y).mean())
'''


def measured(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Run `cmd`; wall seconds and peak RSS of it and all its children (sampled every 0.1 s)."""
    import subprocess

    import psutil

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = p.communicate()
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-3000:]}")
    return {"seconds": time.perf_counter() - t0, "peak_rss_gib": peak / 2**30, "stdout": out.strip()}


def sizes(scales: list[int]) -> list[dict]:
    """Flow vs bare script at each size (see the module doc)."""
    import subprocess

    import pandas as pd
    from bench_flow import wait_healthy

    from ml.sources import load_source
    from stages.common import load_params
    from tests.conftest import edit_params, free_port, tool_env

    params = load_params(ROOT / "params.yaml")
    s = params.source
    frame = load_source(s, ROOT)
    t = frame[s.time_column]
    lo = pd.Timestamp(WEEKS[0], tz="UTC") - pd.Timedelta(days=7 * (params.window.train_weeks + 2))
    frame = frame[(t >= lo) & (t < pd.Timestamp(WEEKS[1], tz="UTC"))].reset_index(drop=True)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        home, port = Path(tmp) / "prefect-home", free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = tool_env(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(api)
            for k in scales:
                repo = make_project(Path(tmp) / f"repo{k}")
                data = scaled(frame, k, params, seed=k)
                incoming = repo / "data" / "incoming"
                incoming.mkdir(parents=True)
                week = data[s.time_column].dt.floor("7D")
                for i, (_, g) in enumerate(data.groupby(week, sort=True)):
                    g.to_parquet(incoming / f"part-{i:02d}.parquet", index=False)
                edit_params(repo, source={"kind": "files", "path": "data/incoming/*.parquet"},
                            validation={"min_rows": params.validation.min_rows * k})
                (repo / "bare.py").write_text(BARE)
                run(["git", "add", "-A"], repo)
                run(["git", "commit", "-qm", "bench"], repo)
                flow = [sys.executable, "-m", "flows.weekly_retrain", "--project-dir", str(repo), "--as-of"]
                measured([*flow, WEEKS[0]], repo, env)  # registers the champion
                f = measured([*flow, WEEKS[1]], repo, env)
                b = measured([sys.executable, "bare.py", WEEKS[1], f"sqlite:///{repo / 'mlflow.db'}"], repo, env)
                rows = int(pd.read_parquet(repo / "data" / "prepared" / "train.parquet", columns=[s.target]).shape[0])
                r = {"scale": k, "window_rows": rows, "flow": {k2: v for k2, v in f.items() if k2 != "stdout"},
                     "bare": {k2: v for k2, v in b.items() if k2 != "stdout"}, "decision": f["stdout"][-300:],
                     "bare_scores": b["stdout"], "ratio": f["seconds"] / b["seconds"]}
                out.append(r)
                print(f"  {k:>3}x {rows:>10,} rows: flow {f['seconds']:6.1f} s, {f['peak_rss_gib']:.2f} GiB; "
                      f"bare {b['seconds']:6.1f} s, {b['peak_rss_gib']:.2f} GiB; flow/bare {r['ratio']:.2f}x",
                      flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return out


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
    if s.unit_id in out:  # a resampled row is another unit
        out[s.unit_id] = out[s.unit_id].astype(str) + "-" + out.groupby(s.unit_id).cumcount().astype(str)
    return out.sort_values(s.time_column, kind="stable").reset_index(drop=True)


def fanout(reps: int, workers: int, scale: int = 1) -> dict:
    import dataclasses

    import pandas as pd
    from distributed import LocalCluster
    from mlflow import MlflowClient
    from prefect import flow
    from prefect.client.orchestration import get_client

    from ml.search import EXAMPLE
    from stages.common import load_params
    from stages.search import run_search
    from tasks import lineage
    from tasks.context import WeekRun
    from tasks.search import search_candidates, task_runner
    from tests.conftest import edit_params

    with tempfile.TemporaryDirectory() as tmp:
        repo = make_project(Path(tmp) / "repo")
        edit_params(repo, search={"candidates": EXAMPLE})
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
    ap.add_argument("--scales", default="1,3", help="fan-out: the training window's rows x these")
    ap.add_argument("--sizes", default="1,3,10", help="flow vs bare at the default week's rows x these")
    ap.add_argument("--out", default=str(ROOT / "tests" / "out" / "bench_scale.json"))
    args = ap.parse_args(argv)
    size_rows = []
    if args.sizes:
        print("cost by size (flow vs bare script, one week, search off):", flush=True)
        size_rows = sizes([int(x) for x in args.sizes.split(",")])
        base = size_rows[0]
        print(f"\n  {'size':>5} {'window rows':>12} {'flow s':>8} {'bare s':>8} {'flow/bare':>10} {'flow GiB':>9} "
              f"{'bare GiB':>9} {'flow s / 1x':>12} {'flow GiB / 1x':>14}")
        for r in size_rows:
            grow = r["window_rows"] / base["window_rows"]
            print(f"  {r['scale']:>4}x {r['window_rows']:>12,} {r['flow']['seconds']:>8.1f} "
                  f"{r['bare']['seconds']:>8.1f} "
                  f"{r['ratio']:>9.2f}x {r['flow']['peak_rss_gib']:>9.2f} {r['bare']['peak_rss_gib']:>9.2f} "
                  f"{r['flow']['seconds'] / base['flow']['seconds']:>11.2f}x "
                  f"{r['flow']['peak_rss_gib'] / base['flow']['peak_rss_gib']:>13.2f}x   (rows {grow:.1f}x)")
        print("  targets: flow/bare <= 1.3x at 1x and <= 1.1x at 10x; time and memory / 1x no more than the rows' "
              "growth; peak memory at 10x <= 8 GiB")
    results = []
    for k in (int(x) for x in args.scales.split(",") if x):
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
    out.write_text(json.dumps({"sizes": size_rows, "fanout": results}, indent=1))
    print(f"figures in {out}")
    return 0 if all(r["same_choice"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
