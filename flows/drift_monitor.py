"""Drift monitor: the newest data vs the champion's training window; on a calibrated drift alarm, start a retrain.

    python -m flows.drift_monitor [--no-trigger]
"""
from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.cli import run_flow
from flows.weekly_retrain import PROJECT
from ml.names import RETRAIN_DEPLOYMENT


@task(name="measure drift vs the champion's training data", cache_policy=NO_CACHE)
def measure(project: str) -> dict:
    """Calibrated drift alarm of the newest available week (features and target) against the weeks the champion
    was trained on, each column judged against its own week-to-week variation over the landed history."""
    from ml.calibration import alarm_summary, describe_alarm
    from ml.drift import drift_summary
    from ml.split import slice_week, week_label
    from stages.common import load_params
    from tasks import lineage, registry
    from tasks.context import WeekRun
    from tasks.data import source_frame
    from tasks.drift import column_kinds, history_weeks, landed_weeks, weekly_null
    from tasks.weeks import resolve_as_of

    root = Path(project)
    params = load_params(root / "params.yaml")
    lineage.ensure_experiment(root, params.registry.experiment)
    version = registry.alias_version(params.registry.model_name, registry.CHAMPION)
    if version is None:
        return {"status": "no champion", "should_retrain": False, "reason": "no champion yet: nothing to compare"}
    from mlflow import MlflowClient

    champ_week = date.fromisoformat(MlflowClient().get_model_version(params.registry.model_name, version).tags["as_of"])
    newest = resolve_as_of(params, root, None)  # the week after the newest landed batch
    ctx = WeekRun(project=root, params=params, as_of=newest)
    current = slice_week(source_frame(ctx), params.source.time_column, newest, allow_empty=True)
    if current.empty:
        return {"status": "no new data", "should_retrain": False, "week": newest.isoformat(),
                "reason": f"no data yet for the week {week_label(newest)}"}
    s = params.source
    gap = (newest - champ_week).days // 7  # weeks between the champion's newest week and this one
    raw = root / "data" / "raw"
    # the champion's window is the reference; every landed week up to this one calibrates the week-to-week bound
    history = landed_weeks(params, raw, history_weeks(params, newest, gap))
    if history is None:
        return {"status": "no history", "should_retrain": False, "week": newest.isoformat(),
                "reason": f"no landed weeks before {week_label(newest)} to compare with"}
    kinds = column_kinds(params)
    null = weekly_null(params, history, newest, kinds, gap=gap)
    if null.reference.empty:
        return {"status": "no reference", "should_retrain": False, "week": newest.isoformat(),
                "reason": f"the training window of champion v{version} (as_of {champ_week}) is not landed"}
    features = [*s.numeric_features, *s.categorical_features]
    numeric = [c for c, k in kinds.items() if k == "numerical"]
    evidently = drift_summary(null.reference, current, numeric, [c for c in kinds if c not in numeric])
    summary = alarm_summary(null, current, features, target=s.target, evidently=evidently)
    should = summary["alarm"] if params.drift.retrain_share is None else (
        summary["target"]["drifted"] or summary["share_drifted"] >= params.drift.retrain_share)
    rule = ("any calibrated alarm" if params.drift.retrain_share is None else
            f"target drifted or >= {params.drift.retrain_share:.0%} of features drifted (calibrated)")
    reason = (f"{describe_alarm(summary)}; week {week_label(newest)} vs the training window of champion "
              f"v{version} (as_of {champ_week}); retrain rule: {rule}; Evidently's default thresholds would flag "
              f"{summary['evidently']['n_drifted']} of {summary['evidently']['n_columns']} features")
    return {"status": "measured", "should_retrain": bool(should), "reason": reason, "week": newest.isoformat(),
            "champion_version": version, "alarm": summary["alarm"], "share_drifted": summary["share_drifted"],
            "drifted": summary["drifted"], "target_drifted": summary["target"]["drifted"],
            "calibration": summary["calibration"]}


@flow(name="drift-monitor", log_prints=True, persist_result=False)
def drift_monitor(trigger: bool = True, project_dir: str | None = None) -> dict:
    """Measure drift; on a calibrated alarm (drift.retrain_share: null) or when the target or at least
    drift.retrain_share of the features drifted, start weekly-retrain/weekly for the new week."""
    log = get_run_logger()
    out = measure(project_dir or str(PROJECT))
    log.info(f"drift-monitor: {out['reason']}")
    if out["should_retrain"] and trigger:
        from prefect.deployments import run_deployment

        run = run_deployment(RETRAIN_DEPLOYMENT, parameters={"as_of": out["week"]}, timeout=0,
                             tags=["drift-triggered"], job_variables=None)
        out["triggered_flow_run"] = str(run.id)
        log.info(f"drift-monitor: started {RETRAIN_DEPLOYMENT} run {run.name} for as_of={out['week']}")
    verdict = ("retrain started" if out.get("triggered_flow_run") else
               "retrain needed (trigger off)" if out["should_retrain"] else "no retrain needed")
    create_markdown_artifact(key="drift-monitor", markdown=f"# Drift monitor: {verdict}\n\n{out['reason']}\n",
                             description="Why the drift monitor did (or did not) start a retrain")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-trigger", action="store_true", help="measure and report only")
    ap.add_argument("--project-dir", default=str(PROJECT))
    args = ap.parse_args(argv)
    return run_flow(drift_monitor, args.project_dir, lambda r: r["reason"], trigger=not args.no_trigger)


if __name__ == "__main__":
    raise SystemExit(main())
