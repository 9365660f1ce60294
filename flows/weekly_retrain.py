"""The weekly retrain flow: ingest → validate → joint checks → search (Dask) → dvc repro → compare → drift → decide →
act, in MLflow.

Run one week with no server set up:  python -m flows.weekly_retrain --as-of 2013-06-02
"""
from __future__ import annotations

import argparse
import dataclasses
from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.cli import run_flow
from stages.common import PROJECT
from tasks import lineage
from tasks.context import WeekRun, git_info
from tasks.retry import retry_if_transient


def _run_name() -> str:
    return f"week-{flow_run.parameters.get('as_of') or 'next'}"


@task(name="check parameters (week, source)", cache_policy=NO_CACHE)
def check_parameters(project: str, as_of: str | None, source: str | None, dry_run: bool) -> WeekRun:
    """Fail in seconds, naming the parameter, on a malformed date, a week without data or a missing file."""
    from stages.common import load_params
    from tasks.data import check_week
    from tasks.weeks import resolve_as_of

    root = Path(project).resolve()
    params = load_params(root / "params.yaml")
    ctx = WeekRun(project=root, params=params, as_of=resolve_as_of(params, root, as_of), dry_run=dry_run,
                  source=source)
    return check_week(ctx, skip_silent=as_of is None or str(as_of).lower() == "next")


@task(name="open lineage run (MLflow, git, params)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def open_lineage(ctx: WeekRun) -> WeekRun:
    """Open the parent MLflow run, tagged with the Prefect flow run, the git commit and the params."""
    root = ctx.project
    exp = lineage.ensure_experiment(root, ctx.params.registry.experiment)
    ctx = dataclasses.replace(ctx, experiment_id=exp)
    fr_id = str(flow_run.get_id() or "")
    tags = {"prefect.flow_run_id": fr_id, "prefect.flow_run_name": str(flow_run.get_name() or ""),
            "prefect.flow_run_url": str(flow_run.get_flow_run_ui_url() or ""), "as_of": ctx.week,
            "dry_run": str(ctx.dry_run).lower(), "source": ctx.source or ctx.params.source.kind, **git_info(root)}
    run_id = lineage.start_parent(ctx, tags, lineage.flatten(_raw_params(root)))
    get_run_logger().info(f"week {ctx.week}: MLflow run {run_id[:8]} in {lineage.tracking_uri(root)}; "
                          f"git {tags['git_sha'][:10]}{' (dirty)' if tags['git_dirty'] == 'true' else ''}")
    return dataclasses.replace(ctx, parent_run_id=run_id)


def _raw_params(root: Path) -> dict:
    import yaml

    return yaml.safe_load((root / "params.yaml").read_text())


@flow(name="weekly-retrain", flow_run_name=_run_name, log_prints=True, persist_result=False)
def weekly_retrain(as_of: str | None = None, source: str | None = None, dry_run: bool = False,
                   project_dir: str | None = None) -> dict:
    """One week: a trustworthy decision about the production model, with the full trail in MLflow.

    Args:
        as_of: the week to process, as the date after its last day (e.g. 2013-06-02); default: the week after
            the newest landed batch (or window.as_of in params.yaml when none has landed).
        source: a CSV/Parquet file to take the new batch from instead of the configured source.
        dry_run: decide and log, but register nothing and move no alias.
        project_dir: the project checkout to run in (default: this one).
    """
    ctx = check_parameters(project_dir or str(PROJECT), as_of, source, dry_run)
    # The steps' libraries load once the parameters are known to be good: a bad parameter fails, and a good run
    # shows its first task, without waiting for pandas, sklearn and MLflow to import.
    from tasks.act import act
    from tasks.data import ingest_batch, validate_batch
    from tasks.drift import drift_report
    from tasks.evaluation import compare_with_champion, decide
    from tasks.joint import joint_check
    from tasks.search import search_week
    from tasks.training import log_candidate, reproduce
    from tasks.ui import publish, publish_held

    ctx = open_lineage(ctx)
    ok = False
    try:
        staged = ingest_batch(ctx)
        validate_batch(ctx, staged)
        held = joint_check(ctx)
        if held:  # the columns no longer relate as before: nothing trains on the week, the champion serves on
            publish_held(ctx, held)
            ok = True
            return {"week": ctx.week, "action": "hold", "summary": held["summary"], "version": None,
                    "mlflow_run_id": ctx.parent_run_id}
        search_week(ctx)
        trained = reproduce(ctx)
        candidate = log_candidate(ctx, trained)
        compared = compare_with_champion(ctx)
        drift = drift_report(ctx)
        decision = decide(ctx, trained, compared, drift)
        key = trained["metrics"]["metric"]
        tags = {**git_info(ctx.project), **{f"dvc.md5.{k}": v for k, v in trained["hashes"].items()},
                "mlflow.run": ctx.parent_run_id, "holdout.metric": key,  # the promise the live monitor checks
                "holdout.loss": repr(float(trained["metrics"]["model"][key]))}
        outcome = act(ctx, decision, candidate, tags)
        publish(ctx, decision, outcome, trained, drift)
        ok = True
        return {"week": ctx.week, "action": decision["action"], "summary": decision["summary"],
                "version": outcome.get("version"), "mlflow_run_id": ctx.parent_run_id}
    finally:
        lineage.end_parent(ctx.parent_run_id, ok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--as-of", help="week to process (the date after its last day), e.g. 2013-06-02")
    ap.add_argument("--source", help="CSV/Parquet file with the new batch (instead of the configured source)")
    ap.add_argument("--dry-run", action="store_true", help="decide and log, but register nothing")
    ap.add_argument("--project-dir", default=str(PROJECT))
    args = ap.parse_args(argv)
    if args.as_of:
        try:
            date.fromisoformat(args.as_of)
        except ValueError:
            ap.error(f"--as-of must be a date like 2013-06-02, got {args.as_of!r}")
    return run_flow(weekly_retrain, args.project_dir, lambda r: f"week {r['week']}: {r['summary']}",
                    as_of=args.as_of, source=args.source, dry_run=args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
