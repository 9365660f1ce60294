"""The week's candidate search, fanned out on a Dask cluster: one Prefect task per declared candidate.

`search_week` runs the DVC pipeline up to `prepare`, then, when the `search` stage is out of date, the
`search-candidates` subflow: each candidate is fitted and scored (ml.search.score_candidate) as a task on
`prefect_dask.DaskTaskRunner` - a local cluster of `search.workers` processes, or the scheduler at
`search.scheduler` / DASK_SCHEDULER_ADDRESS - and logged as a nested MLflow run. The results are written as the
`search` stage's output and recorded in dvc.lock (`dvc commit`), so the `dvc repro` that follows trains the chosen
recipe and a later `dvc repro` on a laptop finds the same choice. A worker that dies mid-fit is replaced and its
candidate rerun by Dask on another worker; a candidate that fails on its own fails the run (nothing to retry).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import lineage
from tasks.context import WeekRun

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def scheduler_address(params) -> str | None:
    return params.search.scheduler or os.environ.get(SCHEDULER_ENV) or None


def task_runner(params):
    """DaskTaskRunner on the configured scheduler, else on a local cluster of worker processes. Worker processes
    report to this run's Prefect API (also the temporary one of a run without a server): without it each would
    start a server of its own."""
    from prefect_dask import DaskTaskRunner

    address = scheduler_address(params)
    if address:
        return DaskTaskRunner(address=address)
    url = api_url()
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)  # cluster start/stop chatter stays out of the flow log
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read by the worker processes as they start
    env = {"PREFECT_API_URL": url} if url else {}
    return DaskTaskRunner(cluster_kwargs={"n_workers": params.search.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None,
                                          "silence_logs": logging.ERROR,
                                          "env": env})


def api_url() -> str | None:
    """The Prefect API this process talks to (a server, or the temporary one started for this run)."""
    from prefect.client.orchestration import get_client

    with contextlib.suppress(Exception):
        return str(get_client().api_url)
    return None


@task(name="dvc repro (land → prepare)", cache_policy=NO_CACHE)
def prepare(ctx: WeekRun) -> bool:
    """Record the week in week.yaml and bring the prepared data up to date; True when the search must run."""
    from stages.common import write_week
    from tasks.training import dvc_repo

    write_week(ctx.path("params.yaml"), ctx.week)
    stale = ctx.path("data", "raw.dvc")  # data/raw was `dvc add`ed before it became the `land` stage's output
    if stale.exists():
        stale.unlink()
    with dvc_repo(ctx.project) as repo:
        ran = [s.addressing for s in repo.reproduce("prepare")]
        changed = bool(repo.status(["search"]))
    get_run_logger().info(f"prepare: dvc repro ran {', '.join(ran) or 'nothing (all cached)'}; search "
                          f"{'out of date' if changed else 'up to date (cached)'}")
    return changed


@task(name="score candidate", task_run_name="candidate {name}", cache_policy=NO_CACHE)
def score(source, name: str, train_cfg, fit, validation) -> dict:
    """Fit one candidate on the training window less its newest weeks, score it on them (runs on a Dask worker)."""
    from ml.search import score_candidate

    r = score_candidate(source, name, train_cfg, fit, validation)
    r["worker_pid"] = os.getpid()
    return r


@flow(name="search-candidates", flow_run_name="search-{ctx.week}", persist_result=False)
def search_candidates(ctx: WeekRun) -> dict:
    """Every declared candidate as a parallel task on the Dask cluster; the best on the validation weeks wins."""
    import pandas as pd

    from ml.search import candidates, choose, longest_first, summary, validation_split
    from stages.common import write_json
    from stages.search import describe

    log = get_run_logger()
    p = ctx.params
    p = dataclasses.replace(p, window=dataclasses.replace(p.window, as_of=ctx.as_of))  # the week being run
    declared = candidates(p)
    fit, val = validation_split(pd.read_parquet(ctx.path("data", "prepared", "train.parquet")), p)
    where = scheduler_address(p) or f"a local Dask cluster of {p.search.workers} worker processes"
    log.info(f"search: {len(declared)} candidates on {where}; fit on {len(fit):,} rows, validated on "
             f"{len(val):,} rows of the newest {p.search.validation_weeks} training week(s)")
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # each task carries its frames (a few MB each): Dask's advice is not for us
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        futures = [score.submit(p.source, name, declared[name], fit, val) for name in longest_first(declared)]
    results = sorted((f.result() for f in futures), key=lambda r: list(declared).index(r["name"]))
    wall = time.perf_counter() - t0
    doc = summary(p, results)
    best = choose(results, p.search.min_gain)
    fits = sum(r["fit_seconds"] for r in results)
    t1 = time.perf_counter()
    parent_id = _log_runs(ctx, p, results, best, where, wall)
    write_json(ctx.path("data", "search", "results.json"), doc)
    _commit_search(ctx)
    log.info(f"{describe(doc)}; {wall:.1f} s for {fits:.1f} s of fits on "
             f"{len({r['worker_pid'] for r in results})} worker(s), {time.perf_counter() - t1:.1f} s to record "
             f"(MLflow run {parent_id[:8]}, dvc.lock)")
    return doc


def _log_runs(ctx: WeekRun, p, results: list[dict], best: dict, where: str, wall: float) -> str:
    """The week's `search` step run and one nested run per candidate (one batch of params and metrics each)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from ml.search import gap

    client, now = MlflowClient(), int(time.time() * 1000)
    with lineage.step_run(ctx, "search") as parent:
        pid = parent.info.run_id
        for r in results:
            run = client.create_run(ctx.experiment_id, run_name=f"candidate-{r['name']}", tags={
                "mlflow.parentRunId": pid, "step": "search-candidate", "as_of": ctx.week, "candidate": r["name"],
                "worker_pid": str(r["worker_pid"]), "chosen": str(r["name"] == best["name"]).lower()})
            params = {"candidate": r["name"], **lineage.flatten(r["train"])}
            metrics = {f"validation_{r['metric']}": r["value"], "fit_seconds": r["fit_seconds"]}
            client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                             metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
            client.set_terminated(run.info.run_id)
        params = {"candidates": len(results), "chosen": best["name"], "chosen_family": best["family"],
                  "validation_weeks": p.search.validation_weeks, "where": where[:250],
                  "worker_processes": len({r["worker_pid"] for r in results})}
        metrics = {f"chosen_validation_{best['metric']}": best["value"], "runner_up_gap": gap(results),
                   "wall_seconds": wall, "fit_seconds_total": sum(r["fit_seconds"] for r in results)}
        client.log_batch(pid, params=[Param(k, str(v)) for k, v in params.items()],
                         metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    return pid


def _commit_search(ctx: WeekRun) -> None:
    """Record the results as the `search` stage's output in dvc.lock, as if `dvc repro` had run it."""
    from tasks.training import dvc_repo

    with dvc_repo(ctx.project) as repo:
        repo.commit("search", force=True)


def search_week(ctx: WeekRun) -> None:
    """Prepare the week's data; fan the candidates out when the search is out of date (else dvc repro has it)."""
    from ml.search import candidates

    stale = prepare(ctx)
    if stale and candidates(ctx.params):
        search_candidates.with_options(task_runner=task_runner(ctx.params))(ctx)
