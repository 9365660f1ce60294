"""The local stack: one command up, one command down.

    python -m deployments.stack up       # Prefect server, MLflow server, Dask cluster, work pool + worker,
                                         # deployments, prediction service
    python -m deployments.stack status
    python -m deployments.stack down     # stops exactly what `up` started (pid files in .stack/)

Everything binds to 127.0.0.1 unless CT_BIND_HOST says otherwise. Bound to any other address (or with
CT_STACK_AUTH=1), the servers' own authentication is on, with credentials taken from the environment only
(`up` stops, naming what is missing, before it starts anything):
  PREFECT_SERVER_API_AUTH_STRING           user:password for the Prefect API and UI (clients: PREFECT_API_AUTH_STRING,
                                           set to the same for everything the stack starts)
  MLFLOW_TRACKING_USERNAME / _PASSWORD     MLflow's basic-auth app; this user is its admin
  CT_SERVING_TOKEN                         the prediction service's bearer token (/predict, /feedback, /reload)
The Dask scheduler and workers stay on 127.0.0.1 (Dask has no authentication of its own).
Settings (environment):
  CT_PREFECT_PORT (4200), CT_MLFLOW_PORT (5000), CT_SERVING_PORT (8000), CT_WORK_POOL (local-process),
  CT_WORKER_QUERY_SECONDS (1, 2 on SQLite: how often the worker asks the API for runs to start)
  CT_HEARTBEAT_SECONDS (30), CT_UNRESPONSIVE_SECONDS (3 heartbeats): a flow run silent that long is marked
                                           Crashed by an automation `up` installs (deployments/automations.py)
  CT_ALERT_WEBHOOK_URL                     alerts (run Failed / Crashed, batch quarantined, promotion, A/B test
                                           started, rollback, experiment ended undecided, live degradation)
                                           POSTed there as JSON
                                           {"subject", "body"} through a Prefect notification block
  PREFECT_SERVER_DATABASE_CONNECTION_URL   e.g. postgresql+asyncpg://user:pw@host/prefect (default: SQLite)
  CT_MLFLOW_BACKEND_STORE_URI              e.g. postgresql://user:pw@host/mlflow (default: SQLite in .stack/)
  CT_MLFLOW_ARTIFACTS_DESTINATION          e.g. s3://bucket/mlflow (default: .stack/mlartifacts)
  CT_AB_STORE_URL                          the A/B prediction log, any SQLAlchemy URL (default: data/ab/ab.db)
  CT_DVC_REMOTE                            e.g. s3://bucket/dvc: the project's default DVC remote (written to
                                           .dvc/config.local, not committed); each weekly run pushes to it
  CT_S3_ENDPOINT_URL                       an S3-compatible server (MinIO, Ceph, rclone serve s3, ...) for the
                                           s3:// settings above (default: AWS); credentials come from the usual
                                           AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, never from a file of ours
  CT_DASK_SCHEDULER                        a running Dask scheduler for the candidate search, e.g.
                                           tcp://10.0.0.5:8786 (default: a scheduler and CT_DASK_WORKERS (2)
                                           worker processes started here on CT_DASK_PORT (8786), kept running)
`up` writes .stack/env with PREFECT_API_URL, MLFLOW_TRACKING_URI, DASK_SCHEDULER_ADDRESS and CT_SERVING_URL:
`source .stack/env`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from deployments.processes import StackError, pid_of, run, start, state_dir, stop, wait_http
from ml.names import DEPLOYMENTS
from serving.net import is_loopback
from stages.common import PROJECT

BIN = Path(sys.executable).parent
QUIET = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false"}


def settings(project: Path) -> dict[str, str]:
    d = state_dir(project)
    prefect_port = os.environ.get("CT_PREFECT_PORT", "4200")
    mlflow_port = os.environ.get("CT_MLFLOW_PORT", "5000")
    serving_port = os.environ.get("CT_SERVING_PORT", "8000")
    dask_port = os.environ.get("CT_DASK_PORT", "8786")
    bind = os.environ.get("CT_BIND_HOST", "127.0.0.1")
    # clients on this machine reach a wildcard bind through loopback
    here = "127.0.0.1" if bind in ("0.0.0.0", "::", "[::]") else (f"[{bind}]" if ":" in bind.strip("[]") else bind)
    auth = not is_loopback(bind) or os.environ.get("CT_STACK_AUTH", "") not in ("", "0", "false")
    return {
        "bind": bind, "auth": "yes" if auth else "",
        "dask": os.environ.get("CT_DASK_SCHEDULER") or f"tcp://127.0.0.1:{dask_port}", "dask_port": dask_port,
        "dask_own": "" if os.environ.get("CT_DASK_SCHEDULER") else "yes",
        "dask_workers": os.environ.get("CT_DASK_WORKERS", "2"),
        "prefect_port": prefect_port, "mlflow_port": mlflow_port, "serving_port": serving_port,
        "serving": f"http://{here}:{serving_port}",
        "pool": os.environ.get("CT_WORK_POOL", "local-process"),
        "api": f"http://{here}:{prefect_port}/api", "mlflow": f"http://{here}:{mlflow_port}",
        "backend": os.environ.get("CT_MLFLOW_BACKEND_STORE_URI", f"sqlite:///{(d / 'mlflow.db').resolve()}"),
        "artifacts": os.environ.get("CT_MLFLOW_ARTIFACTS_DESTINATION", str((d / "mlartifacts").resolve())),
        "dvc_remote": os.environ.get("CT_DVC_REMOTE", ""),
        "s3_endpoint": os.environ.get("CT_S3_ENDPOINT_URL", ""),
    }


def base_env(project: Path, s: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **QUIET, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PREFECT_HOME": str(state_dir(project) / "prefect-home"), "PREFECT_API_URL": s["api"],
           "PREFECT_UI_URL": s["api"].removesuffix("/api"), "MLFLOW_TRACKING_URI": s["mlflow"],
           "MLFLOW_UI_URL": s["mlflow"], "CT_PROJECT_DIR": str(project), "CT_SERVING_URL": s["serving"],
           "DASK_SCHEDULER_ADDRESS": s["dask"]}
    if s.get("s3_endpoint"):
        env["MLFLOW_S3_ENDPOINT_URL"] = s["s3_endpoint"]  # the MLflow server's artifact proxy
    if s.get("auth") and env.get("PREFECT_SERVER_API_AUTH_STRING"):
        env["PREFECT_API_AUTH_STRING"] = env["PREFECT_SERVER_API_AUTH_STRING"]  # the worker, flows, Dask, CLI
    return env


AUTH_VARIABLES = ("PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                  "CT_SERVING_TOKEN")


# Prefect's server on SQLite: one writer at a time, and a write that waits on the lock holds a pooled connection for
# up to 60 s (Prefect's busy timeout). On two loaded cores the periodic writers below queued behind each other and
# behind the worker's polls until reads waited for a connection too (the API stalled for minutes). The stack turns off
# the services it has no use for and batches the task-run writes; any of these set in the environment wins.
SQLITE_SERVER = {
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",  # marks unstarted runs Late (UI colour only)
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",  # no flow here pauses
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",  # marks silent workers offline (UI status only)
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "20",  # one transaction per 20 task-run events
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",  # ... or per second
}


def on_sqlite(env: dict[str, str]) -> bool:
    return env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", "sqlite").startswith("sqlite")


def server_env(env: dict[str, str]) -> dict[str, str]:
    """The Prefect server's environment: `env`, and on SQLite the lighter write load above."""
    return {**SQLITE_SERVER, **env} if on_sqlite(env) else env


def check_auth(s: dict[str, str]) -> None:
    """With authentication on, every credential must be in the environment before anything starts."""
    if not s["auth"]:
        return
    missing = [k for k in AUTH_VARIABLES if not os.environ.get(k, "").strip()]
    why = f"bound to {s['bind']} (CT_BIND_HOST)" if not is_loopback(s["bind"]) else "CT_STACK_AUTH is on"
    if missing:
        raise StackError(f"the stack is {why}, so its servers require authentication: set {', '.join(missing)} in "
                         f"the environment (never in params.yaml or git); see `python -m deployments.stack --help`")
    if ":" not in os.environ["PREFECT_SERVER_API_AUTH_STRING"]:
        raise StackError("PREFECT_SERVER_API_AUTH_STRING must be user:password")
    from serving.app import serving_token

    try:
        serving_token(s["bind"], dict(os.environ))
    except ValueError as e:
        raise StackError(str(e)) from None


def mlflow_auth_config(project: Path, env: dict[str, str]) -> dict[str, str]:
    """MLflow's basic-auth app: its user store in .stack/, the admin from the environment, no access by default.
    The password reaches the server through MLFLOW_AUTH_ADMIN_PASSWORD, never through a file."""
    path = state_dir(project) / "mlflow-auth.ini"
    path.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                    f"database_uri = sqlite:///{(state_dir(project) / 'mlflow-auth.db').resolve()}\n"
                    f"admin_username = {env['MLFLOW_TRACKING_USERNAME']}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    import secrets

    return {**env, "MLFLOW_AUTH_CONFIG_PATH": str(path), "MLFLOW_AUTH_ADMIN_PASSWORD": env["MLFLOW_TRACKING_PASSWORD"],
            # the UI's CSRF key: the user's, or a fresh one per start (UI sessions then log in again)
            "MLFLOW_FLASK_SERVER_SECRET_KEY": env.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32)}


def up(project: Path, deploy: bool = True, worker: bool = True, serving: bool = True) -> dict[str, str]:
    s = settings(project)
    env = base_env(project, s)
    d = state_dir(project)
    d.mkdir(parents=True, exist_ok=True)
    check_auth(s)
    Path(s["artifacts"]).mkdir(parents=True, exist_ok=True) if "://" not in s["artifacts"] else None
    for url in (s["artifacts"], s["dvc_remote"]):
        if url.startswith("s3://"):
            check_bucket(url, s["s3_endpoint"])
    if s["dvc_remote"]:
        dvc_remote(project, s, env)
    start(project, "prefect-server", [str(BIN / "prefect"), "server", "start", "--host", s["bind"],
                                      "--port", s["prefect_port"]], server_env(env))
    auth_app = ["--app-name", "basic-auth"] if s["auth"] else []
    start(project, "mlflow-server", [str(BIN / "mlflow"), "server", "--backend-store-uri", s["backend"],
                                     "--artifacts-destination", s["artifacts"], "--host", s["bind"],
                                     "--port", s["mlflow_port"], "--workers", "1", *auth_app],
          mlflow_auth_config(project, env) if s["auth"] else env)
    wait_http(f"{s['api']}/health", "prefect-server", project)
    print(f"prefect-server: healthy at {s['api']}")
    wait_http(f"{s['mlflow']}/health", "mlflow-server", project)
    print(f"mlflow-server: healthy at {s['mlflow']}")
    exists = subprocess.run([str(BIN / "prefect"), "work-pool", "inspect", s["pool"]], cwd=project, env=env,
                            capture_output=True).returncode == 0
    if not exists:
        run([str(BIN / "prefect"), "work-pool", "create", s["pool"], "--type", "process"], env, project)
        print(f"work pool '{s['pool']}' created (type process)")
    if deploy:
        run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file",
             str(project / "deployments" / "prefect.yaml")], env, project)
        print(f"deployments applied: {', '.join(DEPLOYMENTS)}")
    try:
        print(run([sys.executable, "-m", "deployments.automations", "install"], env, project).strip())
    except StackError as e:
        raise StackError(f"automations not installed: {str(e)[-1500:]}") from None
    if s["dask_own"]:
        start_dask(project, s, env)
    if worker:
        # The worker asks for scheduled runs every second, every 2 s on SQLite (Prefect's default is 10 s, i.e. a
        # 5 s wait on average between `prefect deployment run` and the run starting). Each query also writes the
        # work queue's and the deployment's last-polled time, and SQLite has one writer at a time.
        # Its flow runs send a heartbeat every CT_HEARTBEAT_SECONDS: the automation marks a silent one Crashed.
        wenv = {**env, "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("CT_WORKER_QUERY_SECONDS",
                                                                      "2" if on_sqlite(env) else "1"),
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": os.environ.get("CT_HEARTBEAT_SECONDS", "30")}
        start(project, "worker", [str(BIN / "prefect"), "worker", "start", "--pool", s["pool"], "--type", "process",
                                  "--name", f"{s['pool']}-worker"], wenv)
    if serving:
        start(project, "serving", [sys.executable, "-m", "serving", "--project-dir", str(project),
                                   "--host", s["bind"], "--port", s["serving_port"]], env)
        wait_http(f"{s['serving']}/health", "serving", project, ok=(200, 503))  # 503: no @champion yet
        print(f"serving: answering at {s['serving']} (/predict, /feedback, /health, /metrics)")
    envfile = d / "env"
    envfile.write_text("".join(f"export {k}={env[k]}\n" for k in
                               ("PREFECT_API_URL", "PREFECT_UI_URL", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL",
                                "PREFECT_HOME", "CT_PROJECT_DIR", "CT_SERVING_URL", "DASK_SCHEDULER_ADDRESS",
                                "CT_AB_STORE_URL") if env.get(k))
                       # a reference to the user's variable, not its value: no credential is written to a file
                       + ('export PREFECT_API_AUTH_STRING="$PREFECT_SERVER_API_AUTH_STRING"\n' if s["auth"] else ""))
    (d / "settings.json").write_text(json.dumps(s, indent=2))
    print(f"\nstack is up.  Prefect UI {s['api'].removesuffix('/api')}   MLflow UI {s['mlflow']}   "
          f"predictions {s['serving']}   Dask {s['dask']}\n"
          f"use it from a shell:  source .stack/env && prefect deployment run 'weekly-retrain/weekly'")
    return s


def check_bucket(url: str, endpoint: str) -> None:
    """Fail `up` at once, naming the setting, when an s3:// location cannot be reached or written, instead of
    the first weekly run failing at its first upload."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = url.removeprefix("s3://").split("/", 1)[0]
    client = boto3.client("s3", endpoint_url=endpoint or None)
    try:
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as e:
        where = endpoint or "AWS"
        raise StackError(f"bucket '{bucket}' of {url} is not usable at {where} (CT_S3_ENDPOINT_URL; credentials "
                         f"from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): {e}") from None


def dvc_remote(project: Path, s: dict[str, str], env: dict[str, str]) -> None:
    """CT_DVC_REMOTE as the project's default DVC remote `store`, in .dvc/config.local (machine-local, never
    committed): weekly runs push their data and models there, `dvc pull` on another machine gets them back."""
    dvc = [str(BIN / "dvc"), "remote"]
    run([*dvc, "add", "--local", "--default", "--force", "store", s["dvc_remote"]], env, project)
    if s["s3_endpoint"]:
        run([*dvc, "modify", "--local", "store", "endpointurl", s["s3_endpoint"]], env, project)
    print(f"dvc: default remote 'store' = {s['dvc_remote']} (.dvc/config.local)")


def start_dask(project: Path, s: dict[str, str], env: dict[str, str]) -> None:
    """A Dask scheduler and its worker processes, kept running: each weekly run's candidates go to workers that
    already imported the model libraries. The workers report their task runs to this stack's Prefect API."""
    denv = {**env, "DASK_LOGGING__DISTRIBUTED": "warning"}
    start(project, "dask-scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                      s["dask_port"], "--no-dashboard"], denv)
    start(project, "dask-workers", [str(BIN / "dask"), "worker", s["dask"], "--nworkers", s["dask_workers"],
                                    "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"], denv)
    from distributed import Client

    try:
        with Client(s["dask"], timeout=60) as client:
            client.wait_for_workers(int(s["dask_workers"]), timeout=120)
    except (OSError, TimeoutError) as e:
        tail = "".join((state_dir(project) / f"{n}.log").read_text(errors="replace")[-1000:]
                       for n in ("dask-scheduler", "dask-workers"))
        raise StackError(f"Dask cluster at {s['dask']} did not come up: {e}\n{tail}") from None
    print(f"dask: scheduler at {s['dask']} with {s['dask_workers']} worker processes")


def load_env(project: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables `up` wrote to .stack/env (PREFECT_API_URL, MLFLOW_TRACKING_URI, ...), as `source` would set
    them in a shell whose environment is `environ` (default: this process's)."""
    from string import Template

    lines = (state_dir(project) / "env").read_text().splitlines()
    pairs = (line.removeprefix("export ").split("=", 1) for line in lines if line.strip())
    return {k: Template(v.strip('"')).safe_substitute(os.environ if environ is None else environ) for k, v in pairs}


NAMES = ("serving", "worker", "dask-workers", "dask-scheduler", "mlflow-server", "prefect-server")  # the API last


def down(project: Path) -> None:
    for name in NAMES:
        # the worker ignores SIGTERM for a while; SIGINT makes it exit cleanly
        stop(project, name, first=signal.SIGINT if name == "worker" else signal.SIGTERM)


def status(project: Path) -> dict[str, int | None]:
    out = {n: pid_of(project, n) for n in NAMES}
    for n, pid in out.items():
        print(f"{n:<15} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--project-dir", default=str(PROJECT))
    ap.add_argument("--no-deploy", action="store_true")
    ap.add_argument("--no-worker", action="store_true")
    ap.add_argument("--no-serving", action="store_true", help="do not start the prediction service")
    args = ap.parse_args(argv)
    project = Path(args.project_dir).resolve()
    try:
        if args.command == "up":
            up(project, deploy=not args.no_deploy, worker=not args.no_worker, serving=not args.no_serving)
        elif args.command == "down":
            down(project)
        else:
            status(project)
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.command == "up":
            print("stopping what was started ...", file=sys.stderr)
            down(project)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
