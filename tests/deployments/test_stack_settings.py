"""`deployments.stack up` with shared backends it cannot use stops at once, naming the setting, and starts
nothing; with a usable object store it makes it the project's DVC remote without touching the committed config."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deployments.stack import dvc_remote, settings
from tests.conftest import free_port, make_project, run, s3_server, tool_env


def stack_up(repo: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deployments.stack", "up", "--project-dir", str(repo)], cwd=repo,
                          env=tool_env(CT_PREFECT_PORT=str(free_port()), CT_MLFLOW_PORT=str(free_port()), **env),
                          capture_output=True, text=True, timeout=120)


def test_an_unusable_bucket_stops_up_naming_the_setting_and_starts_nothing(tmp_path):
    repo = make_project(tmp_path / "repo")
    with s3_server() as s3:
        wrong = {**s3["env"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        for env, named in (({"CT_DVC_REMOTE": "s3://no-such-bucket/dvc", **s3["env"]}, "no-such-bucket"),
                           ({"CT_MLFLOW_ARTIFACTS_DESTINATION": f"s3://{s3['bucket']}/mlflow", **wrong},
                            f"s3://{s3['bucket']}/mlflow")):
            p = stack_up(repo, CT_S3_ENDPOINT_URL=s3["endpoint"], **env)
            assert p.returncode == 1, p.stdout + p.stderr
            assert named in p.stderr and "CT_S3_ENDPOINT_URL" in p.stderr, p.stderr
            assert "Traceback" not in p.stderr
            assert not list((repo / ".stack").glob("*.pid")), "up started a server before checking its settings"
    assert not (repo / ".dvc" / "config.local").exists()


def test_the_dvc_remote_goes_to_the_machine_local_config_and_receives_a_push(tmp_path, monkeypatch):
    repo = make_project(tmp_path / "repo")
    committed = (repo / ".dvc" / "config").read_text()
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data" / "sample.csv").write_text("a,b\n1,2\n")
    run(["dvc", "add", "data/sample.csv"], repo)
    with s3_server() as s3:
        for k, v in s3["env"].items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("CT_DVC_REMOTE", f"s3://{s3['bucket']}/dvc")
        monkeypatch.setenv("CT_S3_ENDPOINT_URL", s3["endpoint"])
        dvc_remote(repo, settings(repo), tool_env())
        assert (repo / ".dvc" / "config").read_text() == committed
        assert "s3://ct/dvc" in (repo / ".dvc" / "config.local").read_text()
        assert "1 file pushed" in run(["dvc", "push"], repo, **s3["env"]).stdout
        assert list((s3["root"] / "ct" / "dvc" / "files" / "md5").rglob("*"))


def test_exposed_without_credentials_up_names_every_missing_one_and_starts_nothing(tmp_path):
    repo = make_project(tmp_path / "repo")
    bare = {k: "" for k in ("PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                            "CT_SERVING_TOKEN")}
    for extra, why in (({"CT_BIND_HOST": "0.0.0.0"}, "bound to 0.0.0.0"), ({"CT_STACK_AUTH": "1"}, "CT_STACK_AUTH")):
        p = stack_up(repo, **bare, **extra)
        assert p.returncode == 1, p.stdout + p.stderr
        assert why in p.stderr and "Traceback" not in p.stderr
        for name in bare:
            assert name in p.stderr, (name, p.stderr)
        assert not list((repo / ".stack").glob("*.pid"))
    p = stack_up(repo, **{**bare, "PREFECT_SERVER_API_AUTH_STRING": "admin:pw", "MLFLOW_TRACKING_USERNAME": "admin",
                          "MLFLOW_TRACKING_PASSWORD": "pw", "CT_SERVING_TOKEN": "short"}, CT_BIND_HOST="0.0.0.0")
    assert p.returncode == 1 and "CT_SERVING_TOKEN is 5 characters long" in p.stderr, p.stderr


def test_the_sqlite_prefect_server_gets_a_lighter_write_load_and_the_users_settings_win():
    """On SQLite (one writer at a time) the stack's Prefect server runs without the services it has no use for and
    batches task-run writes; a setting the user exported wins; a PostgreSQL server is left as Prefect ships it."""
    from deployments.stack import SQLITE_SERVER, server_env

    sqlite = server_env({"PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "true"})
    assert sqlite["PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED"] == "false"
    assert sqlite["PREFECT_SERVER_SERVICES_FOREMAN_ENABLED"] == "true"  # the user's own setting
    pg = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://u:p@127.0.0.1/prefect"}
    assert server_env(pg) == pg and not set(SQLITE_SERVER) & set(server_env(pg))
