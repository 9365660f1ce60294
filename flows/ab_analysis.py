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

ICON = {"promote": "✅ promote", "rollback": "↩️ roll back", "continue": "⏳ continue", "invalid": "⚠️ invalid"}


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


@task(name="publish the analysis (MLflow, Prefect UI)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def publish(project: str, params, experiment: dict, traffic: dict, decision: dict, outcome: dict) -> str:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from tasks.ab import log_to_mlflow

    run_id = log_to_mlflow(Path(project), params, experiment, traffic, decision, outcome)
    ev = decision["evidence"]
    lift = ev.get("lift")
    key = f"ab-{experiment['id']}".lower().replace(".", "-")
    moved = ("@champion → v" + outcome["champion"] if decision["action"] == "promote" else
             "@challenger removed, @champion stays v" + str(outcome["champion"]) if decision["action"] == "rollback"
             else "nothing moved")
    lines = [f"# A/B {experiment['id']}: {ICON.get(decision['action'], decision['action'])}", "",
             f"**{decision['summary']}**", "", f"Aliases: {moved}", "", "## Evidence",
             *[f"- {r}" for r in decision["reasons"]], "",
             f"Challenger v{experiment['challenger_version']} vs champion v{experiment['champion_version']} on "
             f"{experiment['share']:.0%} of units since {experiment['started_at']:%Y-%m-%d %H:%M} UTC (planned end "
             f"{experiment['planned_end']:%Y-%m-%d}); MLflow run `{run_id}` in experiment '{params.ab.experiment}'"]
    create_markdown_artifact(key=key, markdown="\n".join(lines), description=f"A/B analysis of {experiment['id']}")
    rows = [{"variant": v, "units": traffic["assigned"][i], "with outcome": len(traffic[v]),
             experiment["metric"]: round(float(traffic[v].mean()), 4) if len(traffic[v]) else None}
            for i, v in enumerate(("champion", "challenger"))]
    if lift:
        rows.append({"variant": "lift (challenger/champion − 1)", "units": None, "with outcome": None,
                     experiment["metric"]: f"{lift['lift']:+.2%} [{lift['ci_low']:+.2%}, {lift['ci_high']:+.2%}] "
                                           f"p={lift['p_value']:.3g}"})
    rows.append({"variant": "SRM p-value", "units": None, "with outcome": None,
                 experiment["metric"]: f"{ev['srm']['assigned_p']:.3g}"})
    create_table_artifact(key=f"{key}-counts", table=rows, description="Units, outcomes and loss per variant")
    return run_id


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
    run_id = publish(project, params, exp, traffic, decision, outcome)
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
