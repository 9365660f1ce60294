"""The prediction log's group commit: a request returns only once its rows are committed, concurrent requests share
transactions, and a failed commit fails exactly the requests whose rows it held - on SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa

from deployments.ablog import ABLog, GroupCommit, utcnow
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
