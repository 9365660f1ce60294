"""The weekly flow vs a bare script doing the same fits and evaluations, and the flow's cold start.

A real `prefect server` is started on 127.0.0.1 first (stopped at the end), so neither figure includes the
API's own start-up. Both sides run as fresh processes on the same week with a champion already registered:
- flow:  `python -m flows.weekly_retrain --as-of W` (validate, dvc repro, compare, drift, decide, log, register)
- bare:  one script: read the window, fit candidate + baseline, score candidate, baseline and champion.
Cold start = process start -> first task running (from the task run's start time in the Prefect API).
Targets: flow/bare <= 1.3x; cold start <= 5 s.   Run: `python benchmarks/bench_flow.py [--reps 2]`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, make_project, prefect_api, run, tool_env  # noqa: E402

WEEKS = ("2013-05-26", "2013-06-02")  # the first one registers the champion (not timed)

BARE = r'''
import sys, numpy as np, pandas as pd, yaml, joblib, glob
sys.path.insert(0, ".")
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder
import mlflow
p = yaml.safe_load(open("params.yaml")); s, h = p["source"], p["train"]["hgb"]
as_of = sys.argv[1]
files = sorted(f for f in glob.glob("data/raw/*.parquet") if f.split("/")[-1] < as_of)[-p["window"]["train_weeks"]:]
train = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
hold = pd.read_parquet(f"data/raw/{as_of}.parquet")
num, cat = s["numeric_features"], s["categorical_features"]
X, Xh = train[num + cat].copy(), hold[num + cat].copy()
X[cat], Xh[cat] = X[cat].astype(str), Xh[cat].astype(str)
m = Pipeline([("prep", ColumnTransformer([("cat", OrdinalEncoder(handle_unknown="use_encoded_value",
              unknown_value=np.nan), cat), ("num", "passthrough", num)])),
              ("model", HistGradientBoostingRegressor(loss=h["loss"], max_iter=h["max_iter"],
              learning_rate=h["learning_rate"], max_leaf_nodes=h["max_leaf_nodes"],
              min_samples_leaf=h["min_samples_leaf"],
              categorical_features=list(range(len(cat))), early_stopping=False, random_state=p["train"]["seed"]))])
m.fit(X, train[s["target"]])
y = hold[s["target"]].to_numpy()
mlflow.set_tracking_uri(sys.argv[2])
champ = mlflow.sklearn.load_model(f"models:/{p['registry']['model_name']}@champion")
print("bare: candidate", np.abs(m.predict(Xh) - y).mean(), "baseline", np.abs(np.median(train[s["target"]]) - y).mean(),
      "champion", np.abs(champ.predict(hold) - y).mean())
'''


def wait_healthy(url: str, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"prefect server at {url} did not become healthy in {timeout:.0f} s")


def first_task_start(api: str, flow_run_name: str) -> datetime:
    """Start of the first task of the newest flow run with this name (earlier reps reuse the name)."""
    (newest,) = prefect_api(api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [flow_run_name]}},
                                               "sort": "START_TIME_DESC", "limit": 1})
    tasks = prefect_api(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [newest["id"]]}}})
    return min(datetime.fromisoformat(t["start_time"]) for t in tasks if t.get("start_time"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        home, port = Path(tmp) / "prefect-home", free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = tool_env(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(api)
            flow_s, bare_s, cold_s = [], [], []
            for i in range(args.reps):
                repo = make_project(Path(tmp) / f"repo{i}")
                run(["git", "add", "-A"], repo)
                run(["git", "commit", "-qm", "bench"], repo)
                (repo / "bare.py").write_text(BARE)
                os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
                setup = subprocess.run([sys.executable, "-m", "flows.weekly_retrain", "--as-of", WEEKS[0],
                                        "--project-dir", str(repo)], cwd=repo, env=env, capture_output=True, text=True)
                if setup.returncode:
                    raise SystemExit(f"set-up week failed:\n{setup.stderr[-3000:]}")
                t0 = datetime.now(UTC)
                p = subprocess.run([sys.executable, "-m", "flows.weekly_retrain", "--as-of", WEEKS[1],
                                    "--project-dir", str(repo)], cwd=repo, env=env, capture_output=True, text=True)
                flow_s.append((datetime.now(UTC) - t0).total_seconds())
                if p.returncode:
                    raise SystemExit(f"flow failed:\n{p.stderr[-3000:]}")
                cold_s.append((first_task_start(api, f"week-{WEEKS[1]}") - t0).total_seconds())
                decision = p.stdout.strip().splitlines()[-1]
                t1 = time.perf_counter()
                b = subprocess.run([sys.executable, "bare.py", WEEKS[1], f"sqlite:///{repo / 'mlflow.db'}"], cwd=repo,
                                   env=env, capture_output=True, text=True)
                bare_s.append(time.perf_counter() - t1)
                if b.returncode:
                    raise SystemExit(f"bare script failed:\n{b.stderr[-3000:]}")
                bare_out = b.stdout.strip()
        finally:
            server.terminate()
            server.wait(timeout=30)
    f, b, c = statistics.median(flow_s), statistics.median(bare_s), statistics.median(cold_s)
    print(f"flow decision: {decision}\n{bare_out}")
    print(f"flow, one week       median {f:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in flow_s)})")
    print(f"bare fits + scoring  median {b:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in bare_s)})")
    print(f"ratio flow/bare      {f / b:6.2f}x   (target <= 1.3)")
    print(f"cold start           median {c:6.2f} s  (process start -> first task running; target <= 5 s)")


if __name__ == "__main__":
    main()
