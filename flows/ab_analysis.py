"""The A/B analysis: the experiment's served traffic and outcomes → SRM check → always-valid test of the lift →
promote, roll back or continue, through the registry aliases; everything logged to MLflow and the Prefect UI.

Scheduled by the weekly flow at the experiment's planned end; safe to run at any time before it:
    python -m flows.ab_analysis [--experiment-id ID] [--no-act]
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.cli import experiment_main
from flows.weekly_retrain import PROJECT
from tasks.retry import retry_if_transient


def _run_name() -> str:
    return f"ab-{flow_run.parameters.get('experiment_id') or 'running'}"


@task(name="load the experiment", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def load_experiment(project: str, experiment_id: str | None) -> tuple:
    from stages.common import load_params
    from tasks import lineage
    from tasks.ab import open_log

    root = Path(project).resolve()
    params = load_params(root / "params.yaml")
    lineage.ensure_experiment(root, params.registry.experiment)  # points MLflow at the project's store
    with open_log(root, params) as log:
        exp = log.experiment(experiment_id) if experiment_id else log.running_experiment(params.registry.model_name)
    if exp is None:
        what = f"parameter 'experiment_id': no experiment '{experiment_id}'" if experiment_id else \
            f"no running experiment (A/B test or canary rollout) for model '{params.registry.model_name}'"
        raise LookupError(f"{what} in {log.url}")
    return params, exp


@flow(name="ab-analysis", flow_run_name=_run_name, log_prints=True, persist_result=False)
def ab_analysis(experiment_id: str | None = None, act: bool = True, reschedule: bool = True,
                project_dir: str | None = None) -> dict:
    """Analyse an A/B experiment (default: the running one) and act on the result.

    Args:
        experiment_id: the experiment to analyse; default the running experiment of the registered model.
        act: move the aliases on promote / roll back (False: analyse and log only).
        reschedule: on "continue", schedule the next look (ab.recheck_days later) when the deployment exists.
        project_dir: the project checkout (default: this one).
    """
    from tasks import ab

    project = project_dir or str(PROJECT)
    log = get_run_logger()
    params, exp = load_experiment(project, experiment_id)
    if exp["kind"] != "ab" and exp["status"] == "running":
        raise LookupError(f"parameter 'experiment_id': {exp['id']} is a {exp['kind']} rollout, not an A/B test: "
                         f"run `python -m flows.canary --experiment-id {exp['id']}`")
    if exp["status"] != "running":
        log.info(f"experiment {exp['id']} is {exp['status']} ({exp.get('decision')}); nothing to analyse")
        return {"experiment_id": exp["id"], "action": "none", "status": exp["status"], "summary": exp.get("decision")}
    traffic = ab.collect(project, params, exp)
    decision = ab.analyse(params, exp, traffic)
    outcome = ab.act(project, params, exp, decision) if act else {"action": decision["action"], "moved": False,
                                                                   "champion": exp["champion_version"]}
    run_id = ab.publish(project, params, exp, traffic, decision, outcome)
    next_run = None
    if decision["action"] == "continue" and reschedule:
        when = min(datetime.now(UTC) + timedelta(days=params.ab.recheck_days), exp["max_end"])
        next_run = ab.schedule_analysis(Path(project), params, exp, when)
    return {"experiment_id": exp["id"], "action": decision["action"], "summary": decision["summary"],
            "moved": outcome["moved"], "champion": outcome["champion"], "mlflow_run_id": run_id,
            "next_analysis": next_run, "evidence": decision["evidence"]}


def main(argv: list[str] | None = None) -> int:
    return experiment_main(ab_analysis, __doc__, argv, PROJECT, "experiment", "analyse and log, move no alias")


if __name__ == "__main__":
    raise SystemExit(main())
