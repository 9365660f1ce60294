"""The prediction log's group commit: a request returns only once its rows are committed, concurrent requests share
transactions, and a failed commit fails exactly the requests whose rows it held - on SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa

from serving.ablog import ABLog, GroupCommit, utcnow
from tests.conftest import postgres_server


def row(i: int) -> dict:
    return {"request_id": f"r{i}", "unit_id": f"u{i}", "variant": "champion", "experiment_id": None,
            "fallback": False, "model_version": "1", "prediction": float(i), "output": None, "created_at": utcnow()}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'ab.db'}"
        else:
            url = stack.enter_context(postgres_server(("ablog",)))["url"]("psycopg2", "ablog")
        log = stack.enter_context(ABLog(url))
        yield log


def logged(store: ABLog) -> set[str]:
    with store.engine.connect() as c:
        return {r[0] for r in c.execute(sa.text("select request_id from predictions"))}


def test_each_request_returns_after_its_rows_are_committed_and_concurrent_ones_share_commits(store):
    writer = GroupCommit(store)
    writer.start()
    seen_committed: list[bool] = []

    async def request(i: int) -> None:
        await writer.write([row(i)])
        seen_committed.append(f"r{i}" in logged(store))  # durable when the caller resumes

    async def main() -> None:
        await asyncio.gather(*(request(i) for i in range(200)))

    try:
        asyncio.run(main())
    finally:
        writer.stop()
    assert logged(store) == {f"r{i}" for i in range(200)}
    assert all(seen_committed) and len(seen_committed) == 200
    assert writer.commits < 200  # requests waiting together went out in one transaction


def test_a_failed_commit_fails_the_requests_it_held_and_the_writer_goes_on(store):
    writer = GroupCommit(store)
    writer.start()

    async def main() -> list:
        await writer.write([row(1)])
        dup = writer.write([row(2), {**row(3), "request_id": "r1"}])  # r1 again: the primary key refuses it
        out = await asyncio.gather(dup, writer.write([row(4)]), return_exceptions=True)
        await writer.write([row(5)])  # the writer goes on after a failed commit
        return out

    try:
        dup, other = asyncio.run(main())
    finally:
        writer.stop()
    got = logged(store)
    assert isinstance(dup, sa.exc.IntegrityError)  # the caller learns its rows were not logged
    assert "r2" not in got  # nothing of a failed transaction is kept
    assert ("r4" in got) == (other is None)  # a request that shared the failed commit is failed too, never lost
    assert "r5" in got


def test_a_log_written_by_an_earlier_version_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as c:  # the tables as the first release wrote them
        c.execute(sa.text("CREATE TABLE experiments (id VARCHAR(80) PRIMARY KEY, model VARCHAR(200) NOT NULL, "
                          "champion_version VARCHAR(20) NOT NULL, challenger_version VARCHAR(20) NOT NULL, "
                          "share FLOAT NOT NULL, metric VARCHAR(40) NOT NULL, started_at DATETIME NOT NULL, "
                          "planned_end DATETIME NOT NULL, max_end DATETIME NOT NULL, planned_units INTEGER NOT NULL, "
                          "plan TEXT, week VARCHAR(10), reason TEXT, status VARCHAR(20) NOT NULL, decided_at DATETIME, "
                          "decision TEXT, scheduled_run VARCHAR(80))"))
        c.execute(sa.text("CREATE TABLE predictions (request_id VARCHAR(80) PRIMARY KEY, unit_id VARCHAR(200) NOT "
                          "NULL, experiment_id VARCHAR(80), variant VARCHAR(12) NOT NULL, model_version VARCHAR(20) "
                          "NOT NULL, fallback BOOLEAN NOT NULL, prediction FLOAT, output TEXT, created_at DATETIME "
                          "NOT NULL)"))
        c.execute(sa.text("INSERT INTO experiments VALUES ('e1', 'm', '1', '2', 0.5, 'mae', '2026-01-01', "
                          "'2026-01-08', '2026-01-22', 100, NULL, NULL, NULL, 'running', NULL, NULL, NULL)"))
        c.execute(sa.text("INSERT INTO predictions VALUES ('r0', 'u0', NULL, 'champion', '1', 0, 1.5, NULL, "
                          "'2026-01-01')"))
    engine.dispose()
    with ABLog(url) as log:
        log.log_predictions([{**row(1), "latency_ms": 2.5, "features": '{"x": 1}'}])
        assert log.running_experiment("m")["kind"] == "ab"  # the default of the added column
        assert log.counts()["predictions"] == 2
    cols = {c["name"] for c in sa.inspect(sa.create_engine(url)).get_columns("predictions")}
    assert {"latency_ms", "features"} <= cols
