"""The joint checks of a landed week (ml/joint.py): do its columns still relate as they did? A week that passed the
contract but whose relations broke (a time feature shifted by hours, a feature in other units, a frozen feed) is
held: kept in data/held/, nothing is trained, the champion serves on. When only features' relations broke, the
week trains from the next run on without those features (a copy with them empty goes to data/raw/); otherwise
it stays out of every training window. A change that lasts (flagged again right after `drift.joint_hold_weeks`
held weeks) is taken as the new normal: that week trains, with a warning."""
from __future__ import annotations

import time

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stages.common import write_json
from tasks import alerts, lineage
from tasks.context import WeekRun


@task(name="joint checks (do the columns relate as before?)", cache_policy=NO_CACHE)
def joint_check(ctx: WeekRun) -> dict | None:
    """None when the week may train; else the hold decision (decision.json, MLflow tags), the batch held."""
    from ml.contract import accepted_history
    from ml.joint import check_week
    from ml.split import week_label, weeks_with_rows
    from stages.ingest import batch_path, held_weeks, hold_batch, rejected_weeks
    from tasks.data import source_frame

    log = get_run_logger()
    p, d = ctx.params, ctx.params.drift
    if not d.joint_checks:
        log.info("joint: off (drift.joint_checks is false)")
        return None
    raw, tcol = ctx.path("data", "raw"), p.source.time_column
    with lineage.step_run(ctx, "joint"):
        import mlflow

        began = time.perf_counter()
        frame = source_frame(ctx)
        history = accepted_history(frame, tcol, ctx.as_of, d.joint_history_weeks + p.window.train_weeks,
                                   rejected_weeks(raw))
        batch = pd.read_parquet(batch_path(raw, ctx.as_of))
        verdict = check_week(history, batch, ctx.as_of, p.source, p.window.train_weeks, d.alarm_rate,
                             null_weeks=d.joint_history_weeks, not_null=held_weeks(raw),
                             has_rows=weeks_with_rows(frame[tcol], ctx.as_of), hold_weeks=d.joint_hold_weeks)
        seconds = time.perf_counter() - began
        record = {"week": week_label(ctx.as_of), "held": verdict.held, "judged": verdict.judged,
                  "lasting_since": [str(w) for w in verdict.lasting_since],
                  "summary": verdict.summary(), "null_weeks": verdict.null_weeks,
                  "reference_weeks": verdict.reference_weeks, "seconds": round(seconds, 2),
                  "checks": [f.to_dict() for f in verdict.flags]}
        write_json(ctx.run_dir / "joint.json", record)
        lineage.log_json(record, "joint/checks.json")
        mlflow.log_metrics({"joint.checks": len(verdict.flags), "joint.flagged": sum(f.flagged for f in verdict.flags),
                            "joint.null_weeks": verdict.null_weeks, "joint.seconds": seconds})
        mlflow.set_tag("joint", "held" if verdict.held else "lasting" if verdict.flagged
                       else "warned" if verdict.warned else "passed" if verdict.judged else "not judged")
        if (verdict.flagged or verdict.warned) and not verdict.held:
            log.warning(f"joint: {verdict.summary()} ({seconds:.1f} s)")
            return None
        if not verdict.held:
            log.info(f"joint: {verdict.summary()} ({seconds:.1f} s)")
            return None
        without = verdict.broken_features  # the week trains later without these (all of it: none)
        record["trains_without"] = list(without)
        where = hold_batch(raw, ctx.as_of, verdict.summary(), record, without=without)
    return _hold(ctx, verdict.summary(), where, record, without)


def _hold(ctx: WeekRun, words: str, where, record: dict, without: tuple[str, ...] = ()) -> dict:
    """The decision of a held week: nothing trained, no alias moved; an alert names what broke."""
    from ml.split import week_label
    from tasks.registry import CHAMPION, alias_version

    log = get_run_logger()
    name = ctx.params.registry.model_name
    champion = alias_version(name, CHAMPION)
    summary = f"held: {words}"
    kept = (f"its batch is kept in {where}; nothing was trained this week, and from the next run on the week trains "
            f"without {', '.join(repr(c) for c in without)} (left empty in data/raw/)" if without else
            f"its batch is kept in {where}, out of every training window; nothing was trained")
    reasons = [f"the week passed the data contract, but {words}", kept,
               f"@champion stays {f'v{champion}' if champion else 'unset'}; if the week is sound, "
               f"`python -m cli.accept {ctx.as_of}` lands it and the next run trains on it"]
    out = {"week": ctx.week, "action": "hold", "summary": summary, "reasons": reasons, "champion_version": champion,
           "evidence": {"question": "held", "joint": record}, "dry_run": ctx.dry_run}
    lineage.record_decision(ctx, out)
    alerts.announce(alerts.HELD, f"week.{ctx.week}", f"batch of week {week_label(ctx.as_of)} held in {where}: {words}",
                    held=str(where))
    log.warning(f"joint: week {week_label(ctx.as_of)} HELD: {words}; batch kept in {where}; "
                f"@champion {f'v{champion}' if champion else '(none)'} serves on")
    return out
