"""The prediction service: answers with @champion and, during an A/B experiment, routes a share of units to
@challenger; logs every prediction and accepts the observed outcomes.

    python -m deployments.serving [--port 8000] [--host 127.0.0.1] [--project-dir .]

    POST /predict   {"unit_id": "UA1545-EWR-20130101-0515", "features": {"dep_delay": 2, "carrier": "UA", ...}}
                    or {"instances": [{"unit_id": ..., "features": {...}}, ...]}
    POST /feedback  {"unit_id": "...", "outcome": 11.0}   or {"outcomes": [{"unit_id": ..., "outcome": ...}, ...]}
    GET  /health    models, versions, experiment, circuit breaker
    GET  /metrics   Prometheus
    POST /reload    re-read the registry aliases and the running experiment now (also done every few seconds)

Bound to 127.0.0.1 by default. With CT_SERVING_TOKEN set (in the environment, never in params.yaml or git),
/predict, /feedback and /reload require `Authorization: Bearer <token>`; bound to any other address, the service
refuses to start without one. A refused request is answered 401 and logs nothing; /health and /metrics stay open
(load balancers and Prometheus).

A unit goes to the challenger when a stable hash of (experiment id, unit id) falls below the experiment's share,
so a unit always meets the same variant. Models are loaded in the background when an alias moves and swapped
in one step: requests in flight finish on the models they started with. A challenger that fails is answered
for by the champion and counted; after `breaker_errors` failures in a row the challenger rests for
`breaker_cooldown_seconds`.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from threadpoolctl import threadpool_limits

from deployments.ablog import ABLog, DuplicateFeedback, GroupCommit, UnknownUnits, store_url, utcnow
from deployments.net import is_loopback
from ml.ab import CHALLENGER, CHAMPION, assign

log = logging.getLogger("serving")
PROJECT = Path(__file__).resolve().parents[1]
CHAMPION_ALIAS, CHALLENGER_ALIAS = "champion", "challenger"


class BadRequest(Exception):
    """A client error: the status code and a message naming the field."""

    def __init__(self, status: int, message: str, field_name: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field_name


# ------------------------------------------------------------------------------------------------ input schema
NUMBER, INTEGER, STRING, BOOLEAN = "number", "integer", "string", "boolean"
_KINDS = {"double": NUMBER, "float": NUMBER, "long": INTEGER, "integer": INTEGER, "string": STRING,
          "boolean": BOOLEAN}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # number | integer | string | boolean
    required: bool  # False: null is accepted (a missing value the model handles)


def schema_from_signature(signature) -> list[Column]:
    """The input columns of an MLflow model signature (column-based signatures only)."""
    if signature is None or signature.inputs is None:
        raise ValueError("the model has no input signature: log it with one (mlflow.models.infer_signature)")
    cols = []
    for spec in signature.inputs.inputs:
        if spec.name is None:
            raise ValueError("the model's signature has unnamed inputs; the service needs named columns")
        kind = _KINDS.get(str(spec.type).split(".")[-1].lower())
        if kind is None:
            raise ValueError(f"column '{spec.name}' has type {spec.type}, which the service does not accept")
        cols.append(Column(spec.name, kind, bool(getattr(spec, "required", True))))
    return cols


def check_features(features: Any, schema: list[Column], where: str) -> dict[str, Any]:
    """The features of one instance, checked against the schema; raises BadRequest naming the field."""
    if not isinstance(features, dict):
        raise BadRequest(422, f"'{where}' must be an object of feature values", where)
    names = {c.name for c in schema}
    extra = [k for k in features if k not in names]
    if extra:
        raise BadRequest(422, f"unknown feature '{where}.{extra[0]}'" + (f" (+{len(extra) - 1} more)" if len(extra) > 1
                         else "") + f"; the model takes: {', '.join(c.name for c in schema)}", f"{where}.{extra[0]}")
    out = {}
    for c in schema:
        key = f"{where}.{c.name}"
        if c.name not in features:
            raise BadRequest(422, f"missing feature '{key}' ({c.kind})", key)
        v = features[c.name]
        if v is None:
            if c.required:
                raise BadRequest(422, f"feature '{key}' is required; null given", key)
            out[c.name] = None
            continue
        if c.kind in (NUMBER, INTEGER):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise BadRequest(422, f"feature '{key}' must be a {c.kind}, got {json.dumps(v)[:40]}", key)
            if c.kind == INTEGER and float(v) != int(v):
                raise BadRequest(422, f"feature '{key}' must be a whole number, got {v}", key)
            if not math.isfinite(v):
                raise BadRequest(422, f"feature '{key}' must be finite", key)
        elif c.kind == STRING and not isinstance(v, str):
            raise BadRequest(422, f"feature '{key}' must be a string, got {json.dumps(v)[:40]}", key)
        elif c.kind == BOOLEAN and not isinstance(v, bool):
            raise BadRequest(422, f"feature '{key}' must be true or false, got {json.dumps(v)[:40]}", key)
        out[c.name] = v
    return out


def _unit_id(v: Any, where: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)) or str(v) == "" or len(str(v)) > 200:
        raise BadRequest(422, f"'{where}' must be a non-empty string or integer (at most 200 characters)", where)
    return str(v)


# ------------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class Served:
    """One loaded model version."""

    version: str
    model: Any
    schema: list[Column]
    classification: bool
    fast: Any = None  # ml.fastpath.RowPath when it reproduces the pipeline on this version's rows, else None

    @cached_property
    def _numeric(self) -> list[str]:
        return [c.name for c in self.schema if c.kind in (NUMBER, INTEGER)]

    def frame(self, rows: list[dict[str, Any]]):
        """The rows as the model's input frame: numbers as one float64 block (null -> NaN), the rest as objects.
        (4x faster than DataFrame.from_records + astype for a single row.)"""
        import numpy as np
        import pandas as pd

        num = self._numeric
        block = np.array([[np.nan if r[c] is None else r[c] for c in num] for r in rows], dtype=np.float64)
        if len(num) == len(self.schema):
            return pd.DataFrame(block, columns=num, copy=False)
        cols = {c: block[:, i] for i, c in enumerate(num)}
        for c in self.schema:
            if c.name not in cols:
                cols[c.name] = np.array([r[c.name] for r in rows], dtype=object)
        return pd.DataFrame(cols, columns=[c.name for c in self.schema], copy=False)

    def predict(self, rows: list[dict[str, Any]]) -> list[tuple[Any, float | None, str | None]]:
        """(prediction for the client, value logged, JSON of class probabilities) per row."""
        if not self.classification:
            values = self.fast.predict(rows) if self.fast else self.model.predict(self.frame(rows))
            return [(float(v), float(v), None) for v in values]
        proba = self.fast.predict_proba(rows) if self.fast else self.model.predict_proba(self.frame(rows))
        classes = [c.item() if hasattr(c, "item") else c for c in self.model.classes_]
        out = []
        for p in proba:
            k = int(p.argmax())
            probs = {str(c): float(x) for c, x in zip(classes, p, strict=True)}
            out.append(({"label": classes[k], "probabilities": probs}, float(p[k]), json.dumps(probs)))
        return out


@dataclass(frozen=True)
class Snapshot:
    """What the service answers with right now; replaced as a whole when an alias or the experiment changes."""

    champion: Served | None = None
    challenger: Served | None = None
    experiment: dict | None = None  # the running experiment (only while its challenger is loaded)


@dataclass
class Breaker:
    threshold: int
    cooldown: float
    failures: int = 0
    open_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def failed(self) -> bool:
        """Count a failure; True when this one opens the breaker."""
        with self.lock:
            self.failures += 1
            if self.failures >= self.threshold:
                self.failures = 0
                self.open_until = time.monotonic() + self.cooldown
                return True
        return False

    def succeeded(self) -> None:
        self.failures = 0


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.predictions = Counter("ct_predictions", "Predictions served", ["variant", "version"], registry=r)
        self.fallbacks = Counter("ct_challenger_fallbacks", "Challenger failures answered by the champion",
                                 registry=r)
        self.breaker_opened = Counter("ct_breaker_opened", "Times the challenger's circuit breaker opened",
                                      registry=r)
        self.rejected = Counter("ct_requests_rejected", "Requests refused with a 4xx", ["endpoint", "status"],
                                registry=r)
        self.feedback = Counter("ct_feedback", "Outcomes recorded", registry=r)
        self.reloads = Counter("ct_model_reloads", "Model swaps after an alias or experiment change", registry=r)
        self.reload_errors = Counter("ct_model_reload_errors", "Failed registry reads or model loads", registry=r)
        self.latency = Histogram("ct_predict_seconds", "Time in /predict (validation, models, log)", registry=r,
                                 buckets=(.0005, .001, .002, .003, .005, .0075, .01, .025, .05, .1, .25, 1))
        self.model_time = Histogram("ct_model_seconds", "Time in the model per call, per variant", ["variant"],
                                    registry=r, buckets=(.0005, .001, .002, .003, .005, .0075, .01, .025, .05, .1, 1))
        self.outcome_loss = Counter("ct_outcome_loss", "Loss of the served prediction, summed over outcomes (absolute "
                                    "error; log loss of the observed class)", ["variant"], registry=r)
        self.outcomes_scored = Counter("ct_outcomes_scored", "Outcomes scored against the served prediction",
                                       ["variant"], registry=r)
        self.version = Gauge("ct_model_version", "Version served under each alias", ["alias"], registry=r)
        self.breaker_state = Gauge("ct_breaker_open", "1 while the challenger's circuit breaker is open",
                                   registry=r)


# ------------------------------------------------------------------------------------------------ the service
class Service:
    def __init__(self, *, model_name: str, tracking_uri: str, store: ABLog, max_body_bytes: int = 262_144,
                 max_batch: int = 500, reload_seconds: float = 2.0, breaker_errors: int = 5,
                 breaker_cooldown_seconds: float = 30.0, log_features: bool = True):
        self.model_name, self.tracking_uri, self.store = model_name, tracking_uri, store
        self.max_body_bytes, self.max_batch, self.reload_seconds = max_body_bytes, max_batch, reload_seconds
        self.breaker = Breaker(breaker_errors, breaker_cooldown_seconds)
        self.log_features = log_features
        self.metrics = Metrics()
        self.snapshot = Snapshot()
        self._cache: dict[str, Served] = {}  # version -> loaded model
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.last_reload_error: str | None = None

    # --- registry --------------------------------------------------------------------------------------------
    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _alias(self, client, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def _load(self, version: str) -> Served:
        if version in self._cache:
            return self._cache[version]
        import mlflow

        uri = f"models:/{self.model_name}/{version}"
        mlflow.set_registry_uri(self.tracking_uri)
        info = mlflow.models.get_model_info(uri)
        schema = schema_from_signature(info.signature)
        fast = None
        if "sklearn" in info.flavors:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
            model = mlflow.sklearn.load_model(local)
            fast = self._fast_path(version, model, local, info.run_id)
        else:  # any other flavour through the generic interface
            model = mlflow.pyfunc.load_model(uri)
        served = Served(version, model, schema, hasattr(model, "predict_proba") and hasattr(model, "classes_"),
                        fast)
        try:  # the first call pays for lazy imports and caches; not a client's
            served.predict([_example(schema)])
        except Exception:
            pass
        self._cache[version] = served
        return served

    def _fast_path(self, version: str, model, local: str, run_id: str | None):
        """The pipeline's row path without pandas (ml/fastpath.py), used only when it gives the pipeline's own
        predictions (within 1e-6) on the model's input example, and the check at registration on the whole
        holdout (tag `serving.fastpath` of the model's run) did not find a difference."""
        from mlflow.models import Model

        from ml.fastpath import agreement, compile_rows

        path = compile_rows(model)
        if path is None:
            log.info(f"v{version}: served through the sklearn pipeline (no fast path for "
                     f"{type(getattr(model, 'steps', [[None, model]])[-1][1]).__name__})")
            return None
        try:
            registered = self._client().get_run(run_id).data.tags.get("serving.fastpath", "") if run_id else ""
            example = Model.load(local).load_input_example(local)
            diff = agreement(model, path, example) if example is not None else float("inf")
        except Exception as e:  # noqa: BLE001 (any doubt: the pipeline)
            registered, diff = f"check failed: {e}", float("inf")
        if registered.startswith("differs") or not diff <= 1e-6:
            why = registered if registered.startswith("differs") else f"max |difference| {diff:.3g} on its example"
            log.warning(f"v{version}: fast path off, served through the sklearn pipeline ({why})")
            return None
        log.info(f"v{version}: fast path on ({registered or 'checked on its input example'})")
        return path

    def reload(self) -> bool:
        """Read the aliases and the running experiment; load and swap in what changed. True if it swapped."""
        with self._reload_lock:
            try:
                client = self._client()
                champ_v = self._alias(client, CHAMPION_ALIAS)
                chall_v = self._alias(client, CHALLENGER_ALIAS)
                exp = self.store.running_experiment(self.model_name)
                if exp is not None and exp["challenger_version"] != chall_v:
                    exp = None  # the registry and the log disagree: serve the champion alone
                champion = self._load(champ_v) if champ_v else None
                challenger = self._load(chall_v) if chall_v and exp is not None else None
            except Exception as e:  # keep serving what is loaded; try again at the next tick
                self.metrics.reload_errors.inc()
                self.last_reload_error = f"{type(e).__name__}: {e}"
                log.warning(f"reload failed, still serving the loaded models: {self.last_reload_error}")
                return False
            self.last_reload_error = None
            old = self.snapshot
            new = Snapshot(champion, challenger, exp if challenger is not None else None)
            same = (_v(old.champion), _v(old.challenger), (old.experiment or {}).get("id"),
                    (old.experiment or {}).get("share")) == \
                   (_v(new.champion), _v(new.challenger), (new.experiment or {}).get("id"),
                    (new.experiment or {}).get("share"))
            if same:
                return False
            # One thread per prediction: single rows gain nothing from OpenMP, and its spinning threads stall for
            # seconds when another process shares the cores. Applied after loading, when the libraries exist.
            threadpool_limits(1)
            self.snapshot = new  # one reference assignment: requests in flight keep the snapshot they took
            self.metrics.reloads.inc()
            self.metrics.version.labels(CHAMPION_ALIAS).set(float(_v(champion) or 0))
            self.metrics.version.labels(CHALLENGER_ALIAS).set(float(_v(challenger) or 0))
            keep = {_v(champion), _v(challenger)}
            self._cache = {k: m for k, m in self._cache.items() if k in keep}
            log.info(f"serving {self.model_name} champion v{_v(champion) or '-'}"
                     + (f", {'canary' if exp.get('kind') == 'canary' else 'challenger'} v{_v(challenger)} on "
                        f"{exp['share']:.0%} of units (experiment {exp['id']})"
                        if exp and challenger else ", no experiment"))
            return True

    def start_watching(self) -> None:
        def loop():
            while not self._stop.wait(self.reload_seconds):
                self.reload()

        self._watcher = threading.Thread(target=loop, name="registry-watcher", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        self._stop.set()

    # --- requests ----------------------------------------------------------------------------------------
    def predict(self, payload: Any) -> Any:
        """Answer `payload`, its rows committed to the A/B log first (one transaction, in this thread)."""
        response, rows, t0 = self.answer(payload)
        self.store.log_predictions(rows)  # committed before anyone is answered
        self.account(rows, t0)
        return response

    def answer(self, payload: Any) -> tuple[Any, list[dict], float]:
        """(response, prediction-log rows, start time): the response may be sent only once the rows are logged."""
        t0 = time.perf_counter()
        snap = self.snapshot
        if snap.champion is None:
            raise BadRequest(503, f"no model to serve yet: '{self.model_name}' has no @champion in the registry")
        single = not (isinstance(payload, dict) and "instances" in payload)
        items = _instances(payload, self.max_batch)
        exp = snap.experiment
        rows, by_variant = [], {CHAMPION: [], CHALLENGER: []}
        for i, item in enumerate(items):
            where = "" if single else f"instances[{i}]."
            unit = _unit_id(item.get("unit_id"), f"{where}unit_id")
            feats = check_features(item.get("features"), snap.champion.schema, f"{where}features")
            req_id = item.get("request_id")
            if req_id is not None and (not isinstance(req_id, str) or not 0 < len(req_id) <= 80):
                raise BadRequest(422, f"'{where}request_id' must be a string of 1 to 80 characters",
                                 f"{where}request_id")
            variant = assign(unit, exp["id"], exp["share"]) if exp else CHAMPION
            rows.append({"request_id": req_id or uuid.uuid4().hex, "unit_id": unit, "variant": variant,
                         "experiment_id": exp["id"] if exp else None, "fallback": False,
                         "features": json.dumps(feats) if self.log_features else None})
            by_variant[variant].append((i, feats))
        answers: dict[int, tuple] = {}
        challenger_rows = by_variant[CHALLENGER]
        if challenger_rows:
            if self.breaker.is_open():
                fallback = challenger_rows
            else:
                try:
                    t = time.perf_counter()
                    out = snap.challenger.predict([f for _, f in challenger_rows])
                    took = time.perf_counter() - t
                    self.metrics.model_time.labels(CHALLENGER).observe(took)
                    ms = took * 1000 / len(challenger_rows)
                    for (i, _), a in zip(challenger_rows, out, strict=True):
                        answers[i] = (a, snap.challenger.version, ms)
                    self.breaker.succeeded()
                    fallback = []
                except Exception as e:
                    fallback = challenger_rows
                    if self.breaker.failed():
                        self.metrics.breaker_opened.inc()
                        log.warning(f"challenger v{snap.challenger.version} failed {self.breaker.threshold} times in "
                                    f"a row ({type(e).__name__}: {e}); circuit breaker open for "
                                    f"{self.breaker.cooldown:g} s, the champion answers")
            for i, _ in fallback:
                rows[i]["fallback"] = True
            self.metrics.fallbacks.inc(len(fallback))
            by_variant[CHAMPION] = by_variant[CHAMPION] + fallback
        champion_rows = by_variant[CHAMPION]
        if champion_rows:
            t = time.perf_counter()
            out = snap.champion.predict([f for _, f in champion_rows])
            took = time.perf_counter() - t
            self.metrics.model_time.labels(CHAMPION).observe(took)
            ms = took * 1000 / len(champion_rows)
            for (i, _), a in zip(champion_rows, out, strict=True):
                answers[i] = (a, snap.champion.version, ms)
        now = utcnow()
        results = []
        for i, row in enumerate(rows):
            (shown, value, output), version, ms = answers[i]
            row.update(model_version=version, prediction=value, output=output, created_at=now, latency_ms=ms)
            results.append({"request_id": row["request_id"], "unit_id": row["unit_id"], "prediction": shown,
                            "variant": row["variant"], "model_version": version, "fallback": row["fallback"]})
        return (results[0] if single else {"predictions": results}), rows, t0

    def account(self, rows: list[dict], t0: float) -> None:
        """Count the logged predictions and the request's latency (start to committed)."""
        for row in rows:
            self.metrics.predictions.labels(row["variant"], row["model_version"]).inc()
        self.metrics.breaker_state.set(1.0 if self.breaker.is_open() else 0.0)
        self.metrics.latency.observe(time.perf_counter() - t0)

    def feedback(self, payload: Any) -> dict:
        if isinstance(payload, dict) and "outcomes" in payload:
            items, prefix = payload["outcomes"], "outcomes"
            if not isinstance(items, list) or not items:
                raise BadRequest(422, "'outcomes' must be a non-empty list", "outcomes")
            extra = [k for k in payload if k != "outcomes"]
            if extra:
                raise BadRequest(422, f"unknown field '{extra[0]}'", extra[0])
        elif isinstance(payload, dict):
            items, prefix = [payload], None
        else:
            raise BadRequest(422, "body must be an object {'unit_id', 'outcome'} or {'outcomes': [...]}")
        if len(items) > self.max_batch:
            raise BadRequest(413, f"'outcomes' has {len(items)} entries; at most {self.max_batch} per call", "outcomes")
        champion = self.snapshot.champion
        classification = champion is not None and champion.classification
        parsed = []
        for i, item in enumerate(items):
            where = f"{prefix}[{i}]." if prefix else ""
            if not isinstance(item, dict):
                raise BadRequest(422, f"'{prefix}[{i}]' must be an object", f"{prefix}[{i}]")
            extra = [k for k in item if k not in ("unit_id", "outcome")]
            if extra:
                raise BadRequest(422, f"unknown field '{where}{extra[0]}'", f"{where}{extra[0]}")
            unit = _unit_id(item.get("unit_id"), f"{where}unit_id")
            if "outcome" not in item or item["outcome"] is None:
                raise BadRequest(422, f"missing '{where}outcome'", f"{where}outcome")
            v = item["outcome"]
            if not classification and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise BadRequest(422, f"'{where}outcome' must be a finite number, got {json.dumps(v)[:40]}",
                                 f"{where}outcome")
            if classification and not isinstance(v, (str, int, bool)):
                raise BadRequest(422, f"'{where}outcome' must be a class label, got {json.dumps(v)[:40]}",
                                 f"{where}outcome")
            parsed.append((unit, v))
        try:
            n = self.store.record_feedback(parsed)
        except UnknownUnits as e:
            raise BadRequest(404, f"{e}: send the prediction request first", "unit_id") from None
        except DuplicateFeedback as e:
            raise BadRequest(409, f"{e}; nothing was recorded from this call", "unit_id") from None
        self.metrics.feedback.inc(n)
        self._score(parsed)
        return {"recorded": n}

    def _score(self, outcomes: list[tuple[str, Any]]) -> None:
        """Live loss per variant for /metrics: each outcome against the prediction its unit was first served."""
        from ml.metrics import EPS  # (imports pandas: not at start-up)

        try:
            served = self.store.first_served([u for u, _ in outcomes])
            for unit, y in outcomes:
                row = served.get(unit)
                if row is None:
                    continue
                variant, value, output = row
                if output:  # classification: log loss of the observed class under the served probabilities
                    p = json.loads(output).get(str(y), 0.0)
                    loss = -math.log(min(max(p, EPS), 1.0))  # clipped as ml.metrics.row_loss does
                elif value is not None:
                    loss = abs(float(y) - value)
                else:
                    continue
                self.metrics.outcome_loss.labels(variant).inc(loss)
                self.metrics.outcomes_scored.labels(variant).inc()
        except Exception as e:  # noqa: BLE001 (a metric never fails a recorded outcome)
            log.warning(f"live loss not counted for {len(outcomes)} outcome(s): {type(e).__name__}: {e}")

    def health(self) -> dict:
        s = self.snapshot
        return {"status": "ok" if s.champion else "waiting for a champion", "model": self.model_name,
                "champion_version": _v(s.champion), "challenger_version": _v(s.challenger),
                "experiment": {k: (str(v) if k in ("started_at", "planned_end") else v) for k, v in s.experiment.items()
                               if k in ("id", "kind", "step", "share", "champion_version", "challenger_version",
                                        "started_at", "planned_end")} if s.experiment else None,
                "fast_path": {"champion": bool(s.champion and s.champion.fast),
                              "challenger": bool(s.challenger and s.challenger.fast)},
                "breaker_open": self.breaker.is_open(), "last_reload_error": self.last_reload_error}


def _v(served: Served | None) -> str | None:
    return served.version if served else None


def _example(schema: list[Column]) -> dict[str, Any]:
    return {c.name: (0.0 if c.kind in (NUMBER, INTEGER) else "x" if c.kind == STRING else False) for c in schema}


def _instances(payload: Any, max_batch: int) -> list[dict]:
    if not isinstance(payload, dict):
        raise BadRequest(422, "body must be a JSON object: {'unit_id', 'features'} or {'instances': [...]}")
    if "instances" in payload:
        extra = [k for k in payload if k != "instances"]
        if extra:
            raise BadRequest(422, f"unknown field '{extra[0]}' beside 'instances'", extra[0])
        items = payload["instances"]
        if not isinstance(items, list) or not items:
            raise BadRequest(422, "'instances' must be a non-empty list", "instances")
        if len(items) > max_batch:
            raise BadRequest(413, f"'instances' has {len(items)} entries; at most {max_batch} per call", "instances")
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                raise BadRequest(422, f"'instances[{i}]' must be an object", f"instances[{i}]")
    else:
        items = [payload]
    for i, it in enumerate(items):
        extra = [k for k in it if k not in ("unit_id", "features", "request_id")]
        if extra:
            where = f"instances[{i}]." if "instances" in payload else ""
            raise BadRequest(422, f"unknown field '{where}{extra[0]}' (expected unit_id, features, request_id)",
                             f"{where}{extra[0]}")
    return items


# ------------------------------------------------------------------------------------------------ HTTP
TOKEN_VARIABLE = "CT_SERVING_TOKEN"


def serving_token(host: str, environ: dict[str, str]) -> str | None:
    """The token clients must present, from the environment; a service bound beyond loopback without one is
    refused (ValueError naming the variable)."""
    token = environ.get(TOKEN_VARIABLE, "").strip() or None
    if token is None and not is_loopback(host):
        raise ValueError(f"the service would be reachable from other machines ({host}) without authentication: "
                         f"set {TOKEN_VARIABLE} to a secret (e.g. `export {TOKEN_VARIABLE}=$(openssl rand -hex 32)`) "
                         f"and give it to clients as `Authorization: Bearer <token>`, or bind to 127.0.0.1")
    if token is not None and len(token) < 16:
        raise ValueError(f"{TOKEN_VARIABLE} is {len(token)} characters long: use at least 16 random characters")
    return token


def create_app(service: Service, *, watch: bool = True, token: str | None = None):
    """The FastAPI app around a Service; the registry is read once at start-up, then every reload_seconds.
    With `token`, /predict, /feedback and /reload answer 401 to a request without `Authorization: Bearer <token>`."""
    from contextlib import asynccontextmanager

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    writer = GroupCommit(service.store)

    @asynccontextmanager
    async def lifespan(_app):
        service.reload()
        writer.start()
        if watch:
            service.start_watching()
        yield
        service.stop_watching()
        writer.stop()

    app = FastAPI(title="continuous-training prediction service", lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)

    async def body_json(request: Request, endpoint: str) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > service.max_body_bytes:
            raise BadRequest(413, f"request body of {int(length):,} bytes is over the limit of "
                                  f"{service.max_body_bytes:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > service.max_body_bytes:
                raise BadRequest(413, f"request body is over the limit of {service.max_body_bytes:,} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(400, f"malformed JSON: {e}") from None

    expected = f"Bearer {token}".encode() if token else None

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: the token is not guessable byte by byte
            raise BadRequest(401, "missing or wrong token: send `Authorization: Bearer <token>` (CT_SERVING_TOKEN)")

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest):
        service.metrics.rejected.labels(request.url.path, str(e.status)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse({"error": e.message, "field": e.field}, status_code=e.status, headers=headers)

    @app.post("/predict")
    async def predict(request: Request):
        authorize(request)
        # The model inline on the event loop: a single-row prediction is a few ms of CPU under the GIL anyway, and
        # a thread hop per request would cost more than it saves. The log write is the writer thread's (a group
        # commit); the answer waits for it without holding up other requests.
        response, rows, t0 = service.answer(await body_json(request, "predict"))
        await writer.write(rows)
        service.account(rows, t0)
        return JSONResponse(response)

    @app.post("/feedback")
    async def feedback(request: Request):
        authorize(request)
        return JSONResponse(service.feedback(await body_json(request, "feedback")))

    @app.get("/health")
    async def health():
        h = service.health()
        return JSONResponse(h, status_code=200 if h["champion_version"] else 503)

    @app.post("/reload")
    async def reload(request: Request):
        import anyio

        authorize(request)

        swapped = await anyio.to_thread.run_sync(service.reload)
        return JSONResponse({"swapped": swapped, **service.health()})

    @app.get("/metrics")
    async def metrics():
        service.metrics.breaker_state.set(1.0 if service.breaker.is_open() else 0.0)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def build_service(project: Path) -> tuple[Service, dict]:
    """A Service configured from the project's params.yaml and environment (MLFLOW_TRACKING_URI, CT_AB_STORE_URL)."""
    from stages.common import load_params
    from tasks.lineage import tracking_uri

    params = load_params(project / "params.yaml")
    sv = params.ab.serving
    service = Service(model_name=params.registry.model_name, tracking_uri=tracking_uri(project),
                      store=ABLog(store_url(project, params.ab.store)), max_body_bytes=sv.max_body_bytes,
                      max_batch=sv.max_batch, reload_seconds=sv.reload_seconds, breaker_errors=sv.breaker_errors,
                      breaker_cooldown_seconds=sv.breaker_cooldown_seconds, log_features=sv.log_features)
    return service, {"host": sv.host, "port": sv.port}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project-dir", default=str(PROJECT))
    ap.add_argument("--host", help="default: ab.serving.host (127.0.0.1)")
    ap.add_argument("--port", type=int, help="default: ab.serving.port (8000)")
    args = ap.parse_args(argv)
    import os

    project = Path(args.project_dir).resolve()
    from stages.common import load_params

    sv = load_params(project / "params.yaml").ab.serving
    host, port = args.host or sv.host, args.port or sv.port
    try:
        token = serving_token(host, dict(os.environ))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from tasks.lineage import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_libraries()
    service, _ = build_service(project)
    log.info(f"prediction service for '{service.model_name}' on http://{host}:{port} "
             f"(registry {service.tracking_uri}; log {service.store.url}; "
             f"{'token required' if token else 'no token: loopback only'})")
    uvicorn.run(create_app(service, token=token), host=host, port=port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
