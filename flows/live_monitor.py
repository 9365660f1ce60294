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
from flows.drift_monitor import RETRAIN_DEPLOYMENT
from flows.weekly_retrain import PROJECT


@task(name="live loss of the champion vs its holdout promise", cache_policy=NO_CACHE)
def measure(project: str, now: str | None = None) -> dict:
    """Per-unit losses of the champion's served predictions of the last `monitor.days` days that have an outcome,
    per day and in all, tested against the holdout loss tagged on the version at registration."""
    import pandas as pd
    from mlflow import MlflowClient

    from deployments.ablog import ABLog, store_url
    from ml.live import live_check
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
        if trigger and params.monitor.retrain:
            from prefect.deployments import run_deployment

            run = run_deployment(RETRAIN_DEPLOYMENT, timeout=0, tags=["live-degradation"])
            out["triggered_flow_run"] = str(run.id)
            log.info(f"live-monitor: started {RETRAIN_DEPLOYMENT} run {run.name}")
    lineage.log_monitor_run(root, params.registry.experiment, "live-monitor", out)
    verdict = ("degraded: retrain started" if out.get("triggered_flow_run") else
               "degraded" if out["degraded"] else out["status"])
    table = "".join(f"| {d['day']} | {d['outcomes']:,} | {d['loss']:.3g} |\n" for d in out.get("per_day", []))
    create_markdown_artifact(key="live-monitor", description="The champion's live loss against its holdout promise",
                             markdown=f"# Live monitor: {verdict}\n\n{out['reason']}\n\n"
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
