"""Live performance monitor: the champion's loss on served predictions whose outcomes arrived, against the loss its
offline holdout promised; on a credible degradation, an alert and a retrain.

    python -m flows.live_monitor [--no-trigger]
"""
from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.cli import run_flow
from flows.weekly_retrain import PROJECT
from ml.names import RETRAIN_DEPLOYMENT


@task(name="live loss of the champion vs its holdout promise", cache_policy=NO_CACHE)
def measure(project: str, now: str | None = None) -> dict:
    """Per-unit losses of the champion's served predictions of the last `monitor.days` days that have an outcome,
    per day and in all, tested against the holdout loss tagged on the version at registration."""
    import pandas as pd
    from mlflow import MlflowClient

    from ml.live import live_check
    from serving.ablog import ABLog, store_url
    from stages.common import load_params
    from tasks import lineage, registry
    from tasks.ab import unit_losses

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
    at = datetime.fromisoformat(now).replace(tzinfo=None) if now else datetime.now(UTC).replace(tzinfo=None)
    since = at - timedelta(days=mon.days)
    with ABLog(store_url(root, params.ab.store)) as log:
        served = log.answered_by(version, since)
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
    days = (pd.DataFrame({"day": pd.to_datetime(scored["created_at"]).dt.date.astype(str).to_numpy(),
                          "loss": losses}).groupby("day")["loss"].agg(["count", "mean"]).reset_index()
            if len(losses) else pd.DataFrame(columns=["day", "count", "mean"]))
    check = live_check(losses, promised, tolerance=mon.tolerance, alpha=mon.alpha, min_outcomes=mon.min_outcomes)
    per_day = [{"day": r.day, "outcomes": int(r["count"]), "loss": float(r["mean"])} for _, r in days.iterrows()]
    out = {**base, "per_day": per_day, "check": check.to_dict() if check else None}
    if check is None:
        return {**out, "status": "too few outcomes", "degraded": False,
                "reason": f"{len(losses)} outcomes for champion v{version} in the last {mon.days} days "
                          f"(monitor.min_outcomes {mon.min_outcomes}); {missing} of {len(due)} due still missing"}
    verdict = "DEGRADED" if check.degraded else "within its promise"
    reason = (f"champion v{version}: live {metric} {check.live_loss:.3g} on {check.outcomes:,} outcomes vs "
              f"{promised:.3g} promised by its holdout ({check.ratio:.2f}x, always-valid interval "
              f"{check.ratio_low:.2f}-{check.ratio_high:.2f}x; tolerance {mon.tolerance:.0%}, p {check.p_value:.3g}): "
              f"{verdict}; {missing} of {len(due)} predictions older than {mon.label_delay_hours:g} h still lack an "
              f"outcome")
    return {**out, "status": "measured", "degraded": bool(check.degraded), "reason": reason,
            "live_loss": check.live_loss, "ratio": check.ratio}


@task(name="would @previous-champion have served better? (rollback)", cache_policy=NO_CACHE)
def compare_previous(project: str, measured: dict, now: str | None = None) -> dict:
    """Score @previous-champion on the logged features of the champion's recent units that have outcomes, and test
    its per-unit loss against the champion's as served; roll back (registry aliases) when it is credibly lower."""
    import json

    import mlflow
    import numpy as np
    import pandas as pd

    from ml.features import feature_frame
    from ml.live import previous_check
    from ml.metrics import row_loss
    from serving.ablog import ABLog, store_url
    from stages.common import load_params
    from tasks import registry
    from tasks.ab import unit_losses

    root = Path(project)
    params = load_params(root / "params.yaml")
    mon, name, s = params.monitor, params.registry.model_name, params.source
    previous = registry.alias_version(name, registry.PREVIOUS)
    if previous is None:
        return {"rolled_back": False, "reason": f"no @{registry.PREVIOUS} to roll back to"}
    at = datetime.fromisoformat(now).replace(tzinfo=None) if now else datetime.now(UTC).replace(tzinfo=None)
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
    outcome = served["outcome"].map(json.loads)
    if s.task == "regression":
        previous_loss = row_loss(s.task, outcome.to_numpy(dtype="float64"), model.predict(frame))
    else:
        # labels compared as text, as the served probabilities are logged; row_loss needs them in sorted order
        # (text order differs from numeric order: 10 sorts before 2)
        classes = np.asarray(model.classes_).astype(str)
        order = np.argsort(classes)
        previous_loss = row_loss(s.task, outcome.astype(str).to_numpy(), model.predict_proba(frame)[:, order],
                                 classes[order])
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


@flow(name="live-monitor", log_prints=True, persist_result=False)
def live_monitor(trigger: bool = True, now: str | None = None, project_dir: str | None = None) -> dict:
    """Measure the champion's live loss; on a credible degradation (monitor.tolerance above its holdout promise),
    send the `ct.model.degraded` alert and, with `trigger` and monitor.retrain, start weekly-retrain/weekly."""
    from stages.common import load_params
    from tasks import alerts, lineage

    log = get_run_logger()
    root = Path(project_dir or PROJECT)
    out = measure(str(root), now)
    log.info(f"live-monitor: {out['reason']}")
    params = load_params(root / "params.yaml")
    if out["degraded"]:
        alerts.announce(alerts.DEGRADED, f"model.{params.registry.model_name}", out["reason"],
                        version=str(out["champion_version"]))
        if params.monitor.rollback:
            out["rollback"] = compare_previous(str(root), out, now)
            log.info(f"live-monitor: {out['rollback']['reason']}")
            if out["rollback"]["rolled_back"]:
                alerts.announce(alerts.ROLLED_BACK, f"model.{params.registry.model_name}",
                                f"live monitor: {out['rollback']['reason']}", version=out["rollback"]["champion"])
        if trigger and params.monitor.retrain:
            from prefect.deployments import run_deployment

            run = run_deployment(RETRAIN_DEPLOYMENT, timeout=0, tags=["live-degradation"])
            out["triggered_flow_run"] = str(run.id)
            log.info(f"live-monitor: started {RETRAIN_DEPLOYMENT} run {run.name}")
    lineage.log_monitor_run(root, params.registry.experiment, "live-monitor", out)
    verdict = ("degraded" + (": rolled back" if out.get("rollback", {}).get("rolled_back") else "")
               + (": retrain started" if out.get("triggered_flow_run") else "") if out["degraded"] else out["status"])
    checked = f"Rollback check: {out['rollback']['reason']}\n\n" if "rollback" in out else ""
    table = "".join(f"| {d['day']} | {d['outcomes']:,} | {d['loss']:.3g} |\n" for d in out.get("per_day", []))
    create_markdown_artifact(key="live-monitor", description="The champion's live loss against its holdout promise",
                             markdown=f"# Live monitor: {verdict}\n\n{out['reason']}\n\n"
                                      + checked
                                      + (f"| day | outcomes | live loss |\n|---|---|---|\n{table}" if table else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-trigger", action="store_true", help="measure, alert and report; start no retrain")
    ap.add_argument("--project-dir", default=str(PROJECT))
    args = ap.parse_args(argv)
    return run_flow(live_monitor, args.project_dir, lambda r: r["reason"], trigger=not args.no_trigger)


if __name__ == "__main__":
    raise SystemExit(main())
