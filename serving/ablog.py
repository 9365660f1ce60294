"""The A/B log: experiments, every prediction served, and the observed outcomes (SQLAlchemy: SQLite by default,
any SQLAlchemy URL via ab.store or CT_AB_STORE_URL).

A prediction row is committed before its response is sent, so nothing a client was answered is lost when the
service stops. The service writes through `GroupCommit`: one thread commits whatever requests are waiting in one
transaction, so the event loop never waits on the database and concurrent requests share a round trip.
Feedback is keyed by unit id: a second outcome for the same unit is refused, never counted twice.
Times are stored as naive UTC.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

RUNNING = "running"
metadata = MetaData()

experiments = Table(
    "experiments", metadata,
    Column("id", String(80), primary_key=True),
    Column("model", String(200), nullable=False, index=True),
    Column("champion_version", String(20), nullable=False),
    Column("challenger_version", String(20), nullable=False),
    Column("share", Float, nullable=False),  # share of units routed to the challenger
    Column("metric", String(40), nullable=False),  # per-unit loss compared: mae (absolute error) | log_loss
    Column("started_at", DateTime, nullable=False),
    Column("planned_end", DateTime, nullable=False),
    Column("max_end", DateTime, nullable=False),
    Column("planned_units", Integer, nullable=False),
    Column("plan", Text),  # JSON: ml.ab.Plan
    Column("week", String(10)),  # the weekly run that started it
    Column("reason", Text),  # why the weekly flow sent the candidate to an A/B test
    Column("status", String(20), nullable=False),  # running | promoted | rolled_back | superseded
    Column("decided_at", DateTime),
    Column("decision", Text),  # the deciding analysis' summary
    Column("scheduled_run", String(80)),  # Prefect flow run of the analysis at the planned end
    Column("kind", String(10), server_default="ab"),  # ab: a fixed split until decided | canary: a ramp (steps)
    Column("step", Integer),  # canary: the current step (0-based); `share` is its share
    Column("step_started_at", DateTime),  # canary: when the current step began
)

predictions = Table(
    "predictions", metadata,
    Column("request_id", String(80), primary_key=True),
    Column("unit_id", String(200), nullable=False, index=True),
    Column("experiment_id", String(80), index=True),  # null outside experiments
    Column("variant", String(12), nullable=False),  # the variant the unit is assigned to
    Column("model_version", String(20), nullable=False),  # the version that answered
    Column("fallback", Boolean, nullable=False, default=False),  # the challenger failed; the champion answered
    Column("prediction", Float),  # regression value, or the probability of the predicted class
    Column("output", Text),  # classification: JSON {class: probability}
    Column("created_at", DateTime, nullable=False),
    Column("latency_ms", Float),  # the answering model's time for this row (its call's time / rows in the call)
    Column("features", Text),  # JSON of the checked input features (lets another version be scored on them)
)

feedback = Table(
    "feedback", metadata,
    Column("unit_id", String(200), primary_key=True),  # one outcome per unit
    Column("outcome", Text, nullable=False),  # JSON value: a number (regression) or a label
    Column("received_at", DateTime, nullable=False),
)


class UnknownUnits(LookupError):
    def __init__(self, units: list[str]):
        super().__init__(f"no prediction was logged for unit_id {', '.join(repr(u) for u in units[:5])}"
                         + (f" (+{len(units) - 5} more)" if len(units) > 5 else ""))
        self.units = units


class DuplicateFeedback(ValueError):
    def __init__(self, units: list[str]):
        super().__init__(f"an outcome is already recorded for unit_id {', '.join(repr(u) for u in units[:5])}"
                         + (f" (+{len(units) - 5} more)" if len(units) > 5 else ""))
        self.units = units


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def aware(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def store_url(project: Path, configured: str | None = None) -> str:
    """CT_AB_STORE_URL, else ab.store from params, else SQLite data/ab/ab.db in the project."""
    url = os.environ.get("CT_AB_STORE_URL") or configured
    if url:
        return url
    return f"sqlite:///{(project / 'data' / 'ab' / 'ab.db').resolve()}"


class ABLog:
    """One handle on the log; safe to share between threads."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        _add_new_columns(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ABLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- experiments ---------------------------------------------------------------------------------------
    def register_experiment(self, row: dict[str, Any]) -> list[str]:
        """Start an experiment; a running one of the same model is superseded. Returns the superseded ids."""
        row = {**row, "status": RUNNING, **{k: naive_utc(row[k]) for k in ("started_at", "planned_end", "max_end",
                                                                            "step_started_at") if row.get(k)}}
        if isinstance(row.get("plan"), dict):
            row["plan"] = json.dumps(row["plan"])
        with self.engine.begin() as c:
            old = [r.id for r in c.execute(select(experiments.c.id).where(
                experiments.c.model == row["model"], experiments.c.status == RUNNING))]
            if old:
                c.execute(update(experiments).where(experiments.c.id.in_(old)).values(
                    status="superseded", decided_at=utcnow(), decision=f"superseded by experiment {row['id']}"))
            c.execute(experiments.insert().values(**row))
        return old

    def close_running(self, model: str, status: str, decision: str) -> list[str]:
        """End every running experiment of `model` (e.g. the weekly flow promoted another version)."""
        with self.engine.begin() as c:
            ids = [r.id for r in c.execute(select(experiments.c.id).where(
                experiments.c.model == model, experiments.c.status == RUNNING))]
            if ids:
                c.execute(update(experiments).where(experiments.c.id.in_(ids)).values(
                    status=status, decided_at=utcnow(), decision=decision))
        return ids

    def set_experiment(self, experiment_id: str, **values: Any) -> None:
        with self.engine.begin() as c:
            c.execute(update(experiments).where(experiments.c.id == experiment_id).values(**values))

    def experiment(self, experiment_id: str) -> dict | None:
        with self.engine.connect() as c:
            r = c.execute(select(experiments).where(experiments.c.id == experiment_id)).mappings().first()
        return _experiment(r)

    def running_experiment(self, model: str) -> dict | None:
        with self.engine.connect() as c:
            r = c.execute(select(experiments).where(experiments.c.model == model, experiments.c.status == RUNNING)
                          .order_by(experiments.c.started_at.desc())).mappings().first()
        return _experiment(r)

    def latest_experiment(self, model: str) -> dict | None:
        with self.engine.connect() as c:
            r = c.execute(select(experiments).where(experiments.c.model == model)
                          .order_by(experiments.c.started_at.desc())).mappings().first()
        return _experiment(r)

    # --- traffic -------------------------------------------------------------------------------------------
    def log_predictions(self, rows: list[dict[str, Any]]) -> None:
        """Commit the rows of one request in one transaction (before the response is sent)."""
        with self.engine.begin() as c:
            c.execute(predictions.insert(), rows)

    def record_feedback(self, outcomes: list[tuple[str, Any]]) -> int:
        """Record outcomes all-or-nothing: unknown or already-answered units reject the whole call."""
        units = [u for u, _ in outcomes]
        dup_in_call = sorted(u for u, n in Counter(units).items() if n > 1)
        if dup_in_call:
            raise DuplicateFeedback(dup_in_call)
        now = utcnow()
        with self.engine.begin() as c:
            known: set[str] = set()
            for i in range(0, len(units), 500):
                chunk = units[i:i + 500]
                known.update(r[0] for r in c.execute(select(predictions.c.unit_id).distinct()
                                                     .where(predictions.c.unit_id.in_(chunk))))
            unknown = [u for u in units if u not in known]
            if unknown:
                raise UnknownUnits(unknown)
            seen: set[str] = set()
            for i in range(0, len(units), 500):
                chunk = units[i:i + 500]
                seen.update(r[0] for r in c.execute(select(feedback.c.unit_id).where(feedback.c.unit_id.in_(chunk))))
            if seen:
                raise DuplicateFeedback([u for u in units if u in seen])
            try:
                c.execute(feedback.insert(), [{"unit_id": u, "outcome": json.dumps(o), "received_at": now}
                                              for u, o in outcomes])
            except IntegrityError:  # a concurrent call recorded one of them first
                raise DuplicateFeedback(units) from None
        return len(outcomes)

    def traffic(self, experiment_id: str):
        """Every prediction of the experiment, oldest first, with the unit's outcome (JSON text; None while it has
        not arrived): a pandas DataFrame."""
        import pandas as pd

        q = (select(predictions.c.unit_id, predictions.c.variant, predictions.c.model_version,
                    predictions.c.fallback, predictions.c.prediction, predictions.c.output,
                    predictions.c.created_at, predictions.c.latency_ms, feedback.c.outcome)
             .select_from(predictions.outerjoin(feedback, predictions.c.unit_id == feedback.c.unit_id))
             .where(predictions.c.experiment_id == experiment_id)
             .order_by(predictions.c.created_at, predictions.c.request_id))
        with self.engine.connect() as c:
            df = pd.DataFrame(c.execute(q).mappings().all(),
                              columns=["unit_id", "variant", "model_version", "fallback", "prediction", "output",
                                       "created_at", "latency_ms", "outcome"])
        return df

    def first_served(self, units: list[str]) -> dict[str, tuple[str, float | None, str | None]]:
        """unit -> (variant, prediction, output) of the first prediction each unit was served."""
        out: dict[str, tuple] = {}
        with self.engine.connect() as c:
            for i in range(0, len(units), 500):
                rows = c.execute(select(predictions.c.unit_id, predictions.c.variant, predictions.c.prediction,
                                        predictions.c.output)
                                 .where(predictions.c.unit_id.in_(units[i:i + 500]))
                                 .order_by(predictions.c.created_at, predictions.c.request_id)).all()
                for unit, variant, value, output in rows:
                    out.setdefault(unit, (variant, value, output))
        return out

    def answered_by(self, version: str, since) -> Any:
        """Every prediction the given model version answered since `since` (naive UTC), oldest first, with its
        input features and the unit's outcome (JSON text; None while absent): a pandas DataFrame."""
        import pandas as pd

        q = (select(predictions.c.unit_id, predictions.c.prediction, predictions.c.output, predictions.c.created_at,
                    predictions.c.features, feedback.c.outcome)
             .select_from(predictions.outerjoin(feedback, predictions.c.unit_id == feedback.c.unit_id))
             .where(predictions.c.model_version == version, predictions.c.created_at >= since)
             .order_by(predictions.c.created_at, predictions.c.request_id))
        with self.engine.connect() as c:
            return pd.DataFrame(c.execute(q).mappings().all(),
                                columns=["unit_id", "prediction", "output", "created_at", "features", "outcome"])

    def request_counts(self, experiment_id: str) -> dict[str, int]:
        """Requests per assigned variant, and how many challenger requests the champion answered instead."""
        with self.engine.connect() as c:
            rows = c.execute(select(predictions.c.variant, func.count(), func.sum(predictions.c.fallback.cast(Integer)))
                             .where(predictions.c.experiment_id == experiment_id)
                             .group_by(predictions.c.variant)).all()
        out = {"champion": 0, "challenger": 0, "fallbacks": 0}
        for variant, n, fb in rows:
            out[variant] = int(n)
            out["fallbacks"] += int(fb or 0)
        return out

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as c:
            return {"predictions": c.execute(select(func.count()).select_from(predictions)).scalar_one(),
                    "feedback": c.execute(select(func.count()).select_from(feedback)).scalar_one()}


def _add_new_columns(engine) -> None:
    """A log written by an older version gets the columns added since (all nullable): ALTER TABLE ADD COLUMN."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DBAPIError

    for table in (experiments, predictions):
        have = {c["name"] for c in inspect(engine).get_columns(table.name)}
        for col in table.columns:
            if col.name in have:
                continue
            default = f" DEFAULT '{col.server_default.arg}'" if col.server_default is not None else ""
            try:
                with engine.begin() as c:
                    c.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {col.name} "
                                   f"{col.type.compile(engine.dialect)}{default}"))
            except DBAPIError:  # another process added it first
                if col.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                    raise


def _experiment(r) -> dict | None:
    if r is None:
        return None
    d = dict(r)
    d["kind"] = d.get("kind") or "ab"
    for k in ("started_at", "planned_end", "max_end", "decided_at", "step_started_at"):
        d[k] = aware(d.get(k))
    d["plan"] = json.loads(d["plan"]) if d.get("plan") else None
    return d


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (the analysis) never block the service's writes
    cur.execute("PRAGMA synchronous=NORMAL")  # a commit survives a crash of the service (not a power cut)
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class GroupCommit:
    """Prediction rows written by one thread, in group commits.

    A request hands its rows over and awaits a future; the writer takes every request waiting at that moment (up
    to `max_rows` rows), inserts them in one transaction, commits, and only then resolves their futures: a client
    is answered only after its rows are durable, as with a commit per request, while the event loop serves other
    requests during the round trip and concurrent requests share one commit. A failed commit fails exactly the
    requests whose rows it held (their clients get an error, nothing is answered unlogged)."""

    def __init__(self, store: ABLog, max_rows: int = 5000):
        self.store, self.max_rows = store, max_rows
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.commits = 0  # transactions so far (rows per commit = a measure of the grouping)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is waiting, then stop the writer."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Return once `rows` are committed (raises what the commit raised)."""
        if self._thread is None:
            raise RuntimeError("the prediction log writer is not running")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queue.put((rows, loop, done))
        await done

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, n, stop = [first], len(first[0]), False
            while n < self.max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                n += len(item[0])
            try:
                self.store.log_predictions([r for rows, _, _ in batch for r in rows])
                self.commits += 1
                outcome: BaseException | None = None
            except Exception as e:  # every waiting request learns that its rows were not logged
                outcome = e
            for _, loop, done in batch:
                loop.call_soon_threadsafe(_resolve, done, outcome)
            if stop:
                return


def _resolve(done: asyncio.Future, error: BaseException | None) -> None:
    if done.done():  # the client went away and its request was cancelled
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
