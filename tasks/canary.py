"""Canary rollouts around the registry: the weekly flow starts one instead of moving @champion at once (when
canary.enabled); the canary flow looks at the traffic, checks the guardrails (ml/canary.py) and ramps, holds,
completes or rolls back. The new model is @challenger while it ramps; the service routes the step's share of units
to it by the same stable hash as an A/B test (salted by the rollout's id), so a unit on the new model stays there
as the share grows."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.ab import CHALLENGER, CHAMPION
from ml.canary import (
    ADVANCE,
    COMPLETE,
    HOLD,
    decide_step,
    error_guardrail,
    latency_guardrail,
    loss_guardrail,
    split_guardrail,
    summarise,
)
from ml.config import Params
from ml.names import CANARY_DEPLOYMENT
from serving.ablog import utcnow
from tasks import alerts, lineage, ui
from tasks.ab import finish_look, open_log, register, schedule
from tasks.registry import CHALLENGER as CHALLENGER_ALIAS
from tasks.registry import CHAMPION as CHAMPION_ALIAS
from tasks.registry import alias_version, promote_challenger, retire_challenger
from tasks.retry import retry_if_transient

KIND = "canary"
MIN_TIMED_ROWS = 20  # per variant and step, before latencies are compared


def start_canary(project: Path, params: Params, *, challenger: str, champion: str, metric: str, week: str,
                 reason: str) -> dict:
    """Register the rollout at its first step (a running experiment of the model is superseded). A retry of the
    same weekly run finds its rollout instead of starting another."""
    c = params.canary
    with open_log(project, params) as log:
        running = log.running_experiment(params.registry.model_name)
        if running and running["kind"] == KIND and running["challenger_version"] == challenger \
                and running["champion_version"] == champion:
            return running
        start = datetime.now(UTC)
        ramp = len(c.steps) - 1  # steps held before the last (the whole traffic)
        row = {"id": f"{params.registry.model_name}-v{challenger}-canary-{start:%Y%m%dT%H%M%S}", "kind": KIND,
               "model": params.registry.model_name, "champion_version": champion, "challenger_version": challenger,
               "share": c.steps[0], "step": 0, "step_started_at": start, "metric": metric, "started_at": start,
               "planned_end": start + timedelta(hours=c.hold_hours * ramp),
               "max_end": start + timedelta(hours=c.max_step_hours * ramp), "planned_units": c.min_outcomes * ramp,
               "plan": {"steps": list(c.steps), "hold_hours": c.hold_hours, "min_outcomes": c.min_outcomes},
               "week": week, "reason": reason}
        return register(log, row)


def schedule_look(project: Path, params: Params, experiment: dict, when: datetime) -> str | None:
    return schedule(project, params, experiment, when, CANARY_DEPLOYMENT, "canary", "flows.canary")


# ------------------------------------------------------------------------------------------------ a look
@task(name="read the rollout's traffic (predictions, outcomes, latency)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def collect(project: str, params: Params, experiment: dict) -> dict:
    with open_log(Path(project), params) as log:
        traffic = log.traffic(experiment["id"])
    out = summarise(traffic, params.source.task, experiment)
    get_run_logger().info(
        f"traffic: {len(traffic):,} predictions; this step {out['step_units'][1]:,} new / {out['step_units'][0]:,} "
        f"old units, {out['step_outcomes']:,} new with outcomes; {out['fallbacks']:,} new-model failures")
    return out


@task(name="check the guardrails", cache_policy=NO_CACHE)
def look(params: Params, experiment: dict, traffic: dict, now: datetime | None = None) -> dict:
    c = params.canary
    now = now or datetime.now(UTC)
    steps = list(experiment["plan"]["steps"])
    share = steps[experiment["step"]]
    loss, lift = loss_guardrail(traffic[CHAMPION], traffic[CHALLENGER], max_increase=c.max_loss_increase,
                                alpha=c.alpha, mde=params.ab.min_detectable_effect, metric=experiment["metric"])
    guardrails = [error_guardrail(traffic["requests"], traffic["fallbacks"], c.max_error_rate, c.alpha),
                  latency_guardrail(traffic["latency"][CHAMPION], traffic["latency"][CHALLENGER],
                                    c.max_latency_ratio, c.latency_slack_ms, MIN_TIMED_ROWS),
                  loss, split_guardrail(*traffic["step_units"], share, params.ab.srm_alpha)]
    held = (now - experiment["step_started_at"]).total_seconds() / 3600
    d = decide_step(steps=steps, step=experiment["step"], held_hours=held, hold_hours=c.hold_hours,
                    max_step_hours=c.max_step_hours, step_outcomes=traffic["step_outcomes"],
                    min_outcomes=c.min_outcomes, guardrails=guardrails, evidence={"lift": lift})
    get_run_logger().info(f"canary: {d.summary}")
    out = d.to_dict()
    out["looked_at"] = now.isoformat()
    return out


@task(name="act on the look (share, registry aliases)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def act(project: str, params: Params, experiment: dict, decision: dict) -> dict:
    """advance: the next step's share; complete: @champion -> the new version (the old one kept as
    @previous-champion); rollback: @challenger removed, the old champion serves everyone; hold: nothing moves."""
    from mlflow import MlflowClient

    logger = get_run_logger()
    name, action, version = experiment["model"], decision["action"], experiment["challenger_version"]
    champ_now, chall_now = alias_version(name, CHAMPION_ALIAS), alias_version(name, CHALLENGER_ALIAS)
    out = {"action": action, "champion": champ_now, "share": experiment["share"], "moved": False}
    if action == HOLD:
        return out
    if champ_now != experiment["champion_version"] or chall_now != version:
        # Someone moved the aliases (a rollback by hand, another promotion): this rollout no longer holds.
        summary = (f"ended: the aliases moved during the rollout (champion v{champ_now}, challenger v{chall_now}; it "
                   f"ramped v{version} over v{experiment['champion_version']}); nothing moved")
        decision.update(action="ended", summary=summary)
        with open_log(Path(project), params) as log:
            log.set_experiment(experiment["id"], status="superseded", decided_at=utcnow(), decision=summary)
        logger.info(f"act: {summary}")
        return {**out, "action": "ended"}
    client = MlflowClient()
    now = utcnow()
    with open_log(Path(project), params) as log:
        if action == ADVANCE:
            log.set_experiment(experiment["id"], share=decision["next_share"], step=experiment["step"] + 1,
                               step_started_at=now)
            out.update(share=decision["next_share"], moved=True)
            logger.info(f"act: v{version} now serves {decision['next_share']:.0%} of units "
                        f"(step {experiment['step'] + 2} of {len(experiment['plan']['steps'])})")
            return out
        if action == COMPLETE:
            promote_challenger(client, name, version, champ_now)
            out.update(champion=version, previous=champ_now, share=1.0, moved=True)
            log.set_experiment(experiment["id"], status="promoted", decided_at=now, decision=decision["summary"])
            logger.info(f"act: {name} v{version} is now @champion (v{champ_now} kept as @previous-champion)")
            alerts.announce(alerts.PROMOTED, f"model.{name}", f"{name} v{version} is @champion after canary "
                            f"rollout {experiment['id']}: {decision['summary']}", version=version)
        else:  # ROLLBACK
            retire_challenger(client, name)
            out.update(share=0.0, moved=True)
            log.set_experiment(experiment["id"], status="rolled_back", decided_at=now, decision=decision["summary"])
            logger.info(f"act: canary v{version} rolled back; @champion v{champ_now} serves every unit")
            alerts.announce(alerts.ROLLED_BACK, f"model.{name}", f"canary rollout {experiment['id']} rolled back: "
                            f"v{champ_now} stays @champion; {decision['summary']}", version=version)
    client.set_model_version_tag(name, version, "canary.decision", action)
    client.set_model_version_tag(name, version, "canary.summary", decision["summary"][:4900])
    return out


def log_to_mlflow(project: Path, params: Params, experiment: dict, traffic: dict, decision: dict,
                  outcome: dict) -> str:
    """One MLflow run per look, in the ab.experiment MLflow experiment (beside the A/B analyses)."""
    from mlflow import MlflowClient

    exp_id = lineage.ensure_experiment(project, params.ab.experiment)
    client = MlflowClient()
    run = client.create_run(exp_id, run_name=f"{experiment['id']}@{decision['looked_at'][:16]}", tags={
        "ab.experiment_id": experiment["id"], "kind": KIND, "decision": decision["action"],
        "decision.summary": decision["summary"], "model": experiment["model"],
        "champion_version": experiment["champion_version"], "challenger_version": experiment["challenger_version"]})
    rid = run.info.run_id
    lineage.log_params(rid, {**{f"canary.{k}": v for k, v in vars(params.canary).items()},
                             "started_at": experiment["started_at"], "week": experiment.get("week")})
    metrics = {"step": decision["step"] + 1, "share": decision["share"], "held_hours":
               decision["evidence"]["held_hours"], "step_outcomes": traffic["step_outcomes"],
               "units_old": len(traffic[CHAMPION]), "units_new": len(traffic[CHALLENGER]),
               "requests_new": traffic["requests"], "failures_new": traffic["fallbacks"]}
    for v in (CHAMPION, CHALLENGER):
        if len(traffic["latency"][v]) > 0:
            metrics[f"latency_p95_ms_{'old' if v == CHAMPION else 'new'}"] = np.percentile(traffic["latency"][v], 95)
    return finish_look(client, rid, metrics, decision["evidence"].get("lift") or {},
                       {"experiment": experiment, "decision": decision, "outcome": outcome}, "canary.json")


@task(name="publish the look (MLflow, Prefect UI)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def publish(project: str, params: Params, experiment: dict, traffic: dict, decision: dict, outcome: dict) -> str:
    """The look logged to MLflow and shown in the Prefect UI; the MLflow run id."""
    run_id = log_to_mlflow(Path(project), params, experiment, traffic, decision, outcome)
    ui.publish_canary(run_id, params, experiment, traffic, decision, outcome)
    return run_id
