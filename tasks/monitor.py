"""What the monitors read and measure: the drift of the newest week against the champion's training data, the
champion's live loss against its holdout promise, and whether @previous-champion would have served the same units
better (each returns a dict with `reason`, the verdict in one sentence), and the retrain a monitor starts."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.names import RETRAIN_DEPLOYMENT


def _now(now: str | None) -> datetime:
    return datetime.fromisoformat(now).replace(tzinfo=None) if now else datetime.now(UTC).replace(tzinfo=None)


@task(name="measure drift vs the champion's training data", cache_policy=NO_CACHE)
def drift_vs_champion(project: str) -> dict:
    """Calibrated drift alarm of the newest available week (features and target) against the weeks the champion
    was trained on, each column judged against its own week-to-week variation over the landed history."""
    from mlflow import MlflowClient

    from ml.calibration import alarm_summary, describe_alarm, retrain_rule
    from ml.drift import column_kinds, drift_summary
    from ml.split import slice_week, week_label
    from stages.common import load_params
    from tasks import lineage, registry
    from tasks.context import WeekRun
    from tasks.data import source_frame
    from tasks.drift import history_weeks, landed_weeks, weekly_null
    from tasks.weeks import resolve_as_of

    root = Path(project)
    params = load_params(root / "params.yaml")
    lineage.ensure_experiment(root, params.registry.experiment)
    version = registry.alias_version(params.registry.model_name, registry.CHAMPION)
    if version is None:
        return {"status": "no champion", "should_retrain": False, "reason": "no champion yet: nothing to compare"}
    champ_week = date.fromisoformat(MlflowClient().get_model_version(params.registry.model_name, version).tags["as_of"])
    newest = resolve_as_of(params, root, None)  # the week after the newest landed batch
    ctx = WeekRun(project=root, params=params, as_of=newest)
    current = slice_week(source_frame(ctx), params.source.time_column, newest, allow_empty=True)
    if current.empty:
        return {"status": "no new data", "should_retrain": False, "week": newest.isoformat(),
                "reason": f"no data yet for the week {week_label(newest)}"}
    s = params.source
    gap = (newest - champ_week).days // 7  # weeks between the champion's newest week and this one
    # the champion's window is the reference; every landed week up to this one calibrates the week-to-week bound
    history = landed_weeks(params, root / "data" / "raw", history_weeks(params, newest, gap))
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
    should, rule = retrain_rule(summary, params.drift.retrain_share)
    reason = (f"{describe_alarm(summary)}; week {week_label(newest)} vs the training window of champion "
              f"v{version} (as_of {champ_week}); retrain rule: {rule}; Evidently's default thresholds would flag "
              f"{summary['evidently']['n_drifted']} of {summary['evidently']['n_columns']} features")
    return {"status": "measured", "should_retrain": should, "reason": reason, "week": newest.isoformat(),
            "champion_version": version, "alarm": summary["alarm"], "share_drifted": summary["share_drifted"],
            "drifted": summary["drifted"], "target_drifted": summary["target"]["drifted"],
            "calibration": summary["calibration"]}


@task(name="live loss of the champion vs its holdout promise", cache_policy=NO_CACHE)
def live_loss(project: str, now: str | None = None) -> dict:
    """Per-unit losses of the champion's served predictions of the last `monitor.days` days that have an outcome,
    per day and in all, tested against the holdout loss tagged on the version at registration."""
    from mlflow import MlflowClient

    from ml.ab import unit_losses
    from ml.live import daily_losses, live_check, live_reason
    from serving.ablog import ABLog, store_url
    from stages.common import load_params
    from tasks import lineage, registry

    root = Path(project)
    params = load_params(root / "params.yaml")
    mon, name = params.monitor, params.registry.model_name
    lineage.ensure_experiment(root, params.registry.experiment)
    version = registry.alias_version(name, registry.CHAMPION)
    if version is None:
        return {"status": "no champion", "degraded": False, "reason": "no champion yet: nothing to monitor"}
    tags = MlflowClient().get_model_version(name, version).tags
    promised = float(tags["holdout.loss"]) if tags.get("holdout.loss") else None
    metric = tags.get("holdout.metric", "loss")
    at = _now(now)
    with ABLog(store_url(root, params.ab.store)) as log:
        served = log.answered_by(version, at - timedelta(days=mon.days))
    served = served[served["created_at"] <= at]
    due = served[served["created_at"] <= at - timedelta(hours=mon.label_delay_hours)]
    missing = int(due["outcome"].isna().sum())
    base = {"champion_version": version, "metric": metric, "promised_loss": promised, "window_days": mon.days,
            "predictions": int(len(served)), "due": int(len(due)), "outcomes_missing": missing,
            "label_delay_hours": mon.label_delay_hours}
    if promised is None:
        return {**base, "status": "no promise", "degraded": False,
                "reason": f"champion v{version} has no holdout.loss tag (registered before the monitor existed)"}
    losses = unit_losses(served.assign(variant="champion"), params.source.task)["champion"]
    scored = served[served["outcome"].notna()].drop_duplicates("unit_id")
    check = live_check(losses, promised, tolerance=mon.tolerance, alpha=mon.alpha, min_outcomes=mon.min_outcomes)
    out = {**base, "per_day": daily_losses(scored["created_at"], losses),
           "check": check.to_dict() if check else None}
    if check is None:
        return {**out, "status": "too few outcomes", "degraded": False,
                "reason": f"{len(losses)} outcomes for champion v{version} in the last {mon.days} days "
                          f"(monitor.min_outcomes {mon.min_outcomes}); {missing} of {len(due)} due still missing"}
    return {**out, "status": "measured", "degraded": bool(check.degraded), "live_loss": check.live_loss,
            "ratio": check.ratio,
            "reason": live_reason(check, version, metric, missing, len(due), mon.label_delay_hours)}


@task(name="would @previous-champion have served better? (rollback)", cache_policy=NO_CACHE)
def previous_champion(project: str, measured: dict, now: str | None = None) -> dict:
    """Score @previous-champion on the logged features of the champion's recent units that have outcomes, and test
    its per-unit loss against the champion's as served; roll back (registry aliases) when it is credibly lower."""
    import json

    import mlflow
    import pandas as pd

    from ml.ab import unit_losses
    from ml.features import feature_frame
    from ml.live import model_losses, previous_check
    from serving.ablog import ABLog, store_url
    from stages.common import load_params
    from tasks import registry

    root = Path(project)
    params = load_params(root / "params.yaml")
    mon, name, s = params.monitor, params.registry.model_name, params.source
    previous = registry.alias_version(name, registry.PREVIOUS)
    if previous is None:
        return {"rolled_back": False, "reason": f"no @{registry.PREVIOUS} to roll back to"}
    at = _now(now)
    with ABLog(store_url(root, params.ab.store)) as log:
        served = log.answered_by(measured["champion_version"], at - timedelta(days=mon.days))
    served = served[(served["created_at"] <= at)].drop_duplicates("unit_id")
    served = served[served["outcome"].notna() & served["features"].notna()]
    if served.empty:
        return {"rolled_back": False, "previous_version": previous,
                "reason": "no served unit with an outcome has its features logged (ab.serving.log_features)"}
    champion_loss = unit_losses(served.assign(variant="champion"), s.task)["champion"]
    frame = feature_frame(pd.DataFrame([json.loads(f) for f in served["features"]]), s.numeric_features,
                          s.categorical_features)
    model = mlflow.sklearn.load_model(f"models:/{name}@{registry.PREVIOUS}")
    previous_loss = model_losses(model, frame, served["outcome"].map(json.loads).to_numpy(), s.task)
    check = previous_check(champion_loss, previous_loss, alpha=mon.alpha, mde=params.ab.min_detectable_effect,
                           min_outcomes=mon.min_outcomes)
    if check is None:
        return {"rolled_back": False, "previous_version": previous,
                "reason": f"{len(served)} scored units: too few to compare v{previous} (monitor.min_outcomes)"}
    line = (f"@previous-champion v{previous} on the same {check.units:,} units: {measured['metric']} "
            f"{check.previous_loss:.3g} vs {check.champion_loss:.3g} served by v{measured['champion_version']} "
            f"({check.change:+.1%}, always-valid {1 - mon.alpha:.0%} CI [{check.ci_low:+.1%}, {check.ci_high:+.1%}])")
    out = {"rolled_back": False, "previous_version": previous, "check": check.to_dict()}
    if not check.better:
        return {**out, "reason": line + ": not credibly better, no rollback"}
    moved = registry.rollback(name)
    return {**out, "rolled_back": True, "champion": moved["champion"], "demoted": moved["demoted"],
            "reason": line + f": rolled back, v{moved['champion']} is @champion again"}


def start_retrain(tags: list[str], as_of: str | None = None) -> str:
    """Start weekly-retrain/weekly (for the week `as_of`, or the next one) without waiting; its flow run id."""
    from prefect.deployments import run_deployment

    run = run_deployment(RETRAIN_DEPLOYMENT, parameters={"as_of": as_of} if as_of else None, timeout=0, tags=tags)
    get_run_logger().info(f"started {RETRAIN_DEPLOYMENT} run {run.name}" + (f" for as_of={as_of}" if as_of else ""))
    return str(run.id)
