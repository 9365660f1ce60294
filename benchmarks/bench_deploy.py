"""The local stack: `prefect deployment run` -> first task running, and the whole weekly run through the worker vs
the same week run in-process (`python -m flows.weekly_retrain`) against the same Prefect API and MLflow server.

Each side runs in its own fresh project copy, so both start from an empty registry and DVC cache.
Targets: first task running <= 3 s after `prefect deployment run`; deployed / in-process <= 1.2x.
The latency is split at the flow run's states: the CLI (its own start), Scheduled -> Pending (the worker's poll,
CT_WORKER_QUERY_SECONDS), Pending -> Running (the flow-run process starts, imports the flow), Running -> first task.
Run: `python benchmarks/bench_deploy.py` (starts and stops its own stack on free ports).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments.stack import load_env  # noqa: E402
from tests.conftest import free_port, make_project, prefect_api, run, tool_env, wait_final  # noqa: E402

WEEK = "2013-06-02"


def project(dest: Path) -> Path:
    repo = make_project(dest)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "bench"], repo)
    return repo


def first_task_start(base: str, run_id: str) -> datetime:
    tasks = prefect_api(base, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    return min(datetime.fromisoformat(t["start_time"]) for t in tasks if t.get("start_time"))


def state_times(base: str, run_id: str) -> dict[str, datetime]:
    import urllib.request

    with urllib.request.urlopen(f"{base}/flow_run_states/?flow_run_id={run_id}", timeout=30) as r:
        states = json.load(r)
    out: dict[str, datetime] = {}
    for st in sorted(states, key=lambda x: x["timestamp"]):
        out.setdefault(st["type"], datetime.fromisoformat(st["timestamp"]))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        deployed = project(Path(tmp) / "deployed")
        env = tool_env(CT_PREFECT_PORT=str(free_port()), CT_MLFLOW_PORT=str(free_port()),
                       CT_SERVING_PORT=str(free_port()), CT_DASK_PORT=str(free_port()))
        stack = [sys.executable, "-m", "deployments.stack"]
        t0 = time.perf_counter()
        up = subprocess.run([*stack, "up", "--project-dir", str(deployed)], cwd=deployed, env=env, capture_output=True,
                            text=True)
        up_s = time.perf_counter() - t0
        try:
            if up.returncode:
                raise SystemExit(f"stack up failed:\n{up.stdout}\n{up.stderr}")
            settings = json.loads((deployed / ".stack" / "settings.json").read_text())
            env.update(load_env(deployed))
            base = settings["api"]
            t_cli = datetime.now().astimezone()
            out = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run",
                                  "weekly-retrain/weekly", "--param", f"as_of={WEEK}"], cwd=deployed, env=env,
                                 capture_output=True, text=True)
            t_cli_end = datetime.now().astimezone()
            run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
            fr = wait_final(base, run_id)
            t_end = datetime.now().astimezone()
            first = first_task_start(base, run_id)
            latency = (first - t_cli).total_seconds()
            st = state_times(base, run_id)
            parts = {"CLI (prefect deployment run, process start to exit)": (t_cli_end - t_cli).total_seconds(),
                     "Scheduled -> Pending (worker picks it up)": (st["PENDING"] - st["SCHEDULED"]).total_seconds(),
                     "Pending -> Running (flow-run process starts)": (st["RUNNING"] - st["PENDING"]).total_seconds(),
                     "Running -> first task running": (first - st["RUNNING"]).total_seconds()}
            deployed_s = (t_end - t_cli).total_seconds()

            local = project(Path(tmp) / "in-process")
            t1 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "flows.weekly_retrain", "--as-of", WEEK, "--project-dir",
                                str(local)], cwd=local, env=env, capture_output=True, text=True)
            local_s = time.perf_counter() - t1
            if p.returncode:
                raise SystemExit(f"in-process run failed:\n{p.stderr[-2000:]}")
        finally:
            subprocess.run([*stack, "down", "--project-dir", str(deployed)], cwd=deployed, env=env,
                           capture_output=True, text=True)
    print(f"stack up (Prefect + MLflow servers, pool, deployments, worker): {up_s:.1f} s")
    print(f"deployed run state: {fr['state_type']}")
    print(f"prefect deployment run -> first task running: {latency:.1f} s (target <= 3 s: "
          f"{latency / 3:.2f}x the target)")
    for name, sec in parts.items():
        print(f"  {name}: {sec:.1f} s")
    print(f"whole weekly run, deployment through the worker: {deployed_s:.1f} s")
    print(f"whole weekly run, in-process (same API + MLflow server): {local_s:.1f} s")
    print(f"ratio deployed/in-process: {deployed_s / local_s:.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()
