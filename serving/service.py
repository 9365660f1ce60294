"""The service: loads @champion and, during an experiment, @challenger from the registry, routes each unit,
answers predictions, logs them and records outcomes."""
from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from typing import Any

from threadpoolctl import threadpool_limits

from ml.ab import CHALLENGER, CHAMPION, assign
from ml.names import CHALLENGER as CHALLENGER_ALIAS
from ml.names import CHAMPION as CHAMPION_ALIAS
from serving.ablog import ABLog, DuplicateFeedback, UnknownUnits, utcnow
from serving.models import Breaker, Metrics, Served, Snapshot
from serving.schema import BadRequest, check_features, example, instances, schema_from_signature, unit_id

log = logging.getLogger("serving")


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
            served.predict([example(schema)])
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
        items = instances(payload, self.max_batch)
        exp = snap.experiment
        rows, by_variant = [], {CHAMPION: [], CHALLENGER: []}
        for i, item in enumerate(items):
            where = "" if single else f"instances[{i}]."
            unit = unit_id(item.get("unit_id"), f"{where}unit_id")
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
                    self._run_model(snap.challenger, CHALLENGER, challenger_rows, answers)
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
            self._run_model(snap.champion, CHAMPION, champion_rows, answers)
        now = utcnow()
        results = []
        for i, row in enumerate(rows):
            (shown, value, output), version, ms = answers[i]
            row.update(model_version=version, prediction=value, output=output, created_at=now, latency_ms=ms)
            results.append({"request_id": row["request_id"], "unit_id": row["unit_id"], "prediction": shown,
                            "variant": row["variant"], "model_version": version, "fallback": row["fallback"]})
        return (results[0] if single else {"predictions": results}), rows, t0

    def _run_model(self, served: Served, variant: str, rows: list[tuple[int, dict]], answers: dict) -> None:
        """`served`'s answers to `rows` ((index, features)) into `answers[index]`, as (answer, version, ms per row);
        the model's time is observed per variant. Raises whatever the model raises, with `answers` untouched."""
        t = time.perf_counter()
        out = served.predict([f for _, f in rows])
        took = time.perf_counter() - t
        self.metrics.model_time.labels(variant).observe(took)
        ms = took * 1000 / len(rows)
        for (i, _), a in zip(rows, out, strict=True):
            answers[i] = (a, served.version, ms)

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
            unit = unit_id(item.get("unit_id"), f"{where}unit_id")
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
