"""The canary rollout: the new model's traffic, outcomes and latency at its current step → guardrails (errors,
latency, live loss vs the old champion, split) → advance to the next share, hold, complete (the new model becomes
@champion) or roll back; logged to MLflow and the Prefect UI.

The weekly flow starts a rollout instead of moving @champion at once when canary.enabled, and schedules the first
look; each look schedules the next (canary.recheck_minutes later) while the rollout runs. Safe to run at any time:
    python -m flows.canary [--experiment-id ID] [--no-act]
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.ab_analysis import load_experiment
from flows.cli import experiment_main
from flows.weekly_retrain import PROJECT


def _run_name() -> str:
    return f"canary-{flow_run.parameters.get('experiment_id') or 'running'}"


@flow(name="canary", flow_run_name=_run_name, log_prints=True, persist_result=False)
def canary(experiment_id: str | None = None, act: bool = True, reschedule: bool = True,
           project_dir: str | None = None) -> dict:
    """Look at a canary rollout (default: the running one) and ramp, hold, complete or roll it back.

    Args:
        experiment_id: the rollout; default the running rollout of the registered model.
        act: change the share / move the aliases (False: check and log only).
        reschedule: while the rollout runs, schedule the next look (canary.recheck_minutes later) when the
            deployment exists.
        project_dir: the project checkout (default: this one).
    """
    from tasks import canary as steps

    project = project_dir or str(PROJECT)
    log = get_run_logger()
    params, exp = load_experiment(project, experiment_id)
    if exp["status"] != "running":
        log.info(f"rollout {exp['id']} is {exp['status']} ({exp.get('decision')}); nothing to look at")
        return {"experiment_id": exp["id"], "action": "none", "status": exp["status"], "summary": exp.get("decision")}
    if exp["kind"] != steps.KIND:
        raise LookupError(f"parameter 'experiment_id': {exp['id']} is an A/B test, not a canary rollout: run "
                          f"`python -m flows.ab_analysis --experiment-id {exp['id']}`")
    traffic = steps.collect(project, params, exp)
    decision = steps.look(params, exp, traffic)
    outcome = steps.act(project, params, exp, decision) if act else {
        "action": decision["action"], "moved": False, "champion": exp["champion_version"], "share": exp["share"]}
    run_id = steps.publish(project, params, exp, traffic, decision, outcome)
    next_run = None
    if decision["action"] in ("advance", "hold") and reschedule:
        when = datetime.now(UTC) + timedelta(minutes=params.canary.recheck_minutes)
        if decision["action"] == "advance":  # the new step cannot pass before it has been held
            when = max(when, datetime.now(UTC) + timedelta(hours=params.canary.hold_hours))
        next_run = steps.schedule_look(Path(project), params, exp, when)
    return {"experiment_id": exp["id"], "action": decision["action"], "summary": decision["summary"],
            "share": outcome["share"], "champion": outcome["champion"], "moved": outcome["moved"],
            "mlflow_run_id": run_id, "next_look": next_run}


def main(argv: list[str] | None = None) -> int:
    return experiment_main(canary, __doc__, argv, PROJECT, "rollout", "check and log, change nothing")


if __name__ == "__main__":
    raise SystemExit(main())
