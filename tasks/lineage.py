"""MLflow record keeping: one parent run per flow run, one nested run per step (MLflow imported lazily)."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages.common import _DERIVED, quiet_libraries, tracking_uri  # noqa: F401 (tasks.lineage.tracking_uri)
from tasks.context import WeekRun


def ui_url() -> str | None:
    """Where people open the MLflow UI: MLFLOW_UI_URL, else the tracking server itself when it is one."""
    uri = os.environ.get("MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI") or ""
    return uri.rstrip("/") if uri.startswith("http") else None


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer; nothing was trained or registered."""


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with the URL, when a tracking server is down (MLflow's own retries take minutes)."""
    if not uri.startswith("http"):
        return
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
            if r.status == 200:
                return
            problem = f"HTTP {r.status}"
    except OSError as e:
        problem = str(getattr(e, "reason", e))
    raise TrackingUnavailable(f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is not reachable: {problem}; "
                              "start it (python -m deployments.stack up) or unset MLFLOW_TRACKING_URI")


def forget_stores(uri: str) -> None:
    """Drop what MLflow keeps open in this process for the store at `uri` (its stores and SQLAlchemy engines):
    after the store's SQLite file was removed and made again (the demo's workspace started afresh), a kept engine
    would write to the removed file."""
    import sys

    if "mlflow" not in sys.modules:
        return
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for registry in (tracking_utils._tracking_store_registry, registry_utils._model_registry_store_registry):
        if registry is not None:
            registry._get_store_with_resolved_uri.cache_clear()
    for store in (TrackingStore, RegistryStore):
        engine = store._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()


def ensure_experiment(project: Path, name: str) -> str:
    """Point MLflow at the store and return the experiment id (artifacts under the project for SQLite)."""
    import mlflow

    quiet_libraries()
    uri = tracking_uri(project)
    check_server(uri)
    if uri != os.environ.get("MLFLOW_TRACKING_URI"):
        _DERIVED.add(uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (project / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite") else None
    return mlflow.create_experiment(name, artifact_location=location)


def start_parent(ctx: WeekRun, tags: dict[str, str], params: dict[str, Any]) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.create_run(ctx.experiment_id, run_name=f"week-{ctx.week}", tags=tags)
    log_params(run.info.run_id, params)
    return run.info.run_id


def mlflow_key(name: str) -> str:
    """A param or metric name MLflow accepts: the characters it refuses (brackets, a '%' in a column such as
    'T (degC)' or 'CO(GT)') become '_'; the params themselves are in params.yaml, logged as it is."""
    return re.sub(r"[^\w\-. :/]", "_", str(name))


def log_params(run_id: str, params: dict[str, Any]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Param

    items = [Param(mlflow_key(k), str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        MlflowClient().log_batch(run_id, params=items[i:i + 100])


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v)[:5000])


def end_parent(run_id: str, ok: bool) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_terminated(run_id, status="FINISHED" if ok else "FAILED")


@contextmanager
def step_run(ctx: WeekRun, step: str) -> Iterator[Any]:
    """A nested MLflow run for one task, active in this thread while the task runs."""
    import mlflow
    from mlflow import MlflowClient

    run = MlflowClient().create_run(ctx.experiment_id, run_name=step,
                                    tags={"mlflow.parentRunId": ctx.parent_run_id, "step": step,
                                          "as_of": ctx.week})
    with mlflow.start_run(run_id=run.info.run_id) as active:
        yield active


def log_monitor_run(project: Path, experiment: str, name: str, out: dict[str, Any]) -> str:
    """One MLflow run per look of a monitor: its verdict as tags, its figures as metrics, all of it as JSON."""
    from mlflow import MlflowClient

    exp = ensure_experiment(project, experiment)
    client = MlflowClient()
    tags = {"step": name, "status": str(out.get("status")), "degraded": str(bool(out.get("degraded"))).lower(),
            "champion_version": str(out.get("champion_version") or ""), "reason": str(out.get("reason"))[:4900]}
    if out.get("triggered_flow_run"):
        tags["triggered_flow_run"] = out["triggered_flow_run"]
    if "rollback" in out:
        tags["rolled_back"] = str(bool(out["rollback"].get("rolled_back"))).lower()
    run = client.create_run(exp, run_name=name, tags=tags)
    for k in ("live_loss", "promised_loss", "ratio", "predictions", "due", "outcomes_missing"):
        if isinstance(out.get(k), (int, float)):
            client.log_metric(run.info.run_id, k, float(out[k]))
    client.log_text(run.info.run_id, json.dumps(out, indent=2, default=str), f"{name}.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def record_decision(ctx: WeekRun, decision: dict[str, Any], metrics: dict[str, float] | None = None) -> None:
    """The week's decision in data/runs/<week>/decision.json and in the MLflow step `decide` (artifact, the tags
    `decision` / `decision.summary` the registry views read, and any `metrics`)."""
    from stages.common import write_json

    write_json(ctx.run_dir / "decision.json", decision)
    with step_run(ctx, "decide"):
        import mlflow

        log_json(decision, "decision.json")
        mlflow.set_tags({"decision": decision["action"], "decision.summary": decision["summary"]})
        if metrics:
            mlflow.log_metrics({mlflow_key(k): v for k, v in metrics.items()})


def log_json(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, default=str), artifact_file)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out
