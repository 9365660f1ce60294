"""A real registry (MLflow SQLite) holding models trained on real weeks, and the prediction service as a real
uvicorn process on a free 127.0.0.1 port, stopped by the test that started it."""
from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pandas as pd

from serving.traffic import ServiceProcess, request_rows, send_outcomes, send_predictions
from tests.conftest import ROOT, edit_params, free_port, tool_env

MODEL = "flight-delay"


def week(flights, as_of: str) -> pd.DataFrame:
    from ml.split import slice_week

    return slice_week(flights, "time_hour", date.fromisoformat(as_of))


def train(flights, params, as_of: str, *, max_iter: int | None = None, family: str | None = None):
    """A model of the project's families fitted on the 4 weeks before `as_of`."""
    from ml.models import build_model
    from ml.split import training_weeks

    t = params.train
    if max_iter is not None:
        t = dataclasses.replace(t, hgb=dataclasses.replace(t.hgb, max_iter=max_iter))
    if family is not None:
        t = dataclasses.replace(t, family=family)
    frame = pd.concat([week(flights, w.isoformat()) for w in training_weeks(date.fromisoformat(as_of), 4)])
    return build_model(params.source, t).fit(frame, frame[params.source.target])


def register(tracking_uri: str, params, model, holdout: pd.DataFrame, alias: str | None = None) -> str:
    """Log and register a model the way the weekly flow's log_candidate does; returns its version."""
    import mlflow
    from mlflow.models import infer_signature

    from ml.features import feature_frame
    from tasks.training import contract_signature, pip_requirements

    s = params.source
    complete = holdout.dropna(subset=list(s.numeric_features)).head(5)  # nullability comes from the contract
    example = feature_frame(complete, s.numeric_features, s.categorical_features)
    sig = contract_signature(infer_signature(example, model.predict(example)), params.validation.required)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name("serving-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment("serving-tests")
    with global_tracking_uri(tracking_uri), mlflow.start_run(experiment_id=exp_id):
        info = mlflow.sklearn.log_model(model, name="model", signature=sig, input_example=example,
                                        pip_requirements=pip_requirements("hgb"), serialization_format="cloudpickle",
                                        registered_model_name=MODEL)
    version = str(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(MODEL, alias, version)
    return version


@contextmanager
def global_tracking_uri(uri: str):
    """MLflow's fluent logging needs a process-wide tracking URI, and MLflow 3 writes it into os.environ, where
    the flows (later tests in this process) would take it for the user's setting: put both back afterwards."""
    import mlflow

    env, before = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def fragile_model(params, flights, as_of: str):
    """The project's linear family with the imputer taken out: fails on rows with a missing number."""
    model = train(flights, params, as_of, family="linear")
    num = model.named_steps["prep"].named_transformers_["num"]
    num.steps = [s for s in num.steps if s[0] != "simpleimputer"]
    return model


def instances(frame: pd.DataFrame, params) -> list[dict]:
    """JSON-ready {unit_id, features} for every row of a real week (NaN -> null)."""
    s = params.source
    return request_rows(frame, s.numeric_features, s.categorical_features, s.unit_id)


class Service(ServiceProcess):
    """The service on a free port, with the calls the tests make."""

    def __init__(self, project: Path, tracking_uri: str):
        super().__init__(project, free_port(), env=tool_env(MLFLOW_TRACKING_URI=tracking_uri))

    def predict_all(self, rows: list[dict]) -> list[dict]:
        return send_predictions(self.http, rows, batch=250)

    def feedback_all(self, outcomes: list[tuple[str, float]]) -> None:
        send_outcomes(self.http, outcomes)

    def metric(self, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.http.get("/metrics").text.splitlines()
                   if line.startswith(name))


def serving_project(dest: Path, **params) -> Path:
    """A folder holding the project's params.yaml (what the service reads), tuned for quick reloads."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    ab = yaml.safe_load((dest / "params.yaml").read_text())["ab"]
    ab["serving"].update(reload_seconds=0.5, breaker_errors=3, breaker_cooldown_seconds=60)
    edit_params(dest, ab=ab, **params)
    return dest


def outcomes_of(frame: pd.DataFrame, params) -> list[tuple[str, float]]:
    s = params.source
    return list(zip(frame[s.unit_id], frame[s.target].astype(float), strict=True))
