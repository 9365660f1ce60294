"""The weekly decision carried out: the candidate registered with its reasons, then one of promote (straight, or
through a canary ramp), an A/B experiment, hold or reject. Alias moves are tasks.registry's; experiments are
tasks.ab's and tasks.canary's."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stages.common import write_json
from tasks import alerts, lineage, registry
from tasks.context import WeekRun
from tasks.retry import retry_if_transient


@task(name="act on the decision (registry aliases)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def act(ctx: WeekRun, decision: dict, candidate: dict, lineage_tags: dict[str, str]) -> dict:
    """promote: champion -> new version, old one kept as previous-champion (with canary.enabled: a ramp as
    @challenger first); ab_test: challenger alias + A/B experiment; hold / reject: the version keeps its reason, no
    alias moves. A dry run registers nothing."""
    from mlflow import MlflowClient

    log = get_run_logger()
    name, action = ctx.params.registry.model_name, decision["action"]
    if ctx.dry_run:
        log.info(f"act: dry run: would {action}; nothing registered, no alias moved")
        return {"action": action, "version": None, "dry_run": True}
    client = MlflowClient()
    # A retry (e.g. after a lost connection) reuses the version this run already registered.
    done = client.search_model_versions(f"name='{name}' and run_id='{candidate['run_id']}'")
    tags = {**lineage_tags, "trained_until": candidate["trained_until"], "refit": str(candidate["refit"]).lower(),
            "recipe": candidate["recipe"]}
    version = str(done[0].version) if done else registry.register(ctx, candidate["model_uri"], candidate["run_id"],
                                                                  decision, tags)
    out: dict[str, Any] = {"action": action, "version": version, "model": name}
    champion = registry.alias_version(name, registry.CHAMPION) if action in ("promote", "ab_test") else None
    if action == "promote" and ctx.params.canary.enabled and champion and champion != version:
        out["canary"] = _start_canary(ctx, client, decision, version, champion)
    elif action == "promote":
        out.update(_promote(ctx, client, decision, version, champion))
    elif action == "ab_test":
        out["ab_request"] = _start_ab(ctx, client, decision, version, champion)
    elif action == "hold":
        log.info(f"act: {name} v{version} registered and held: the running experiment decides; aliases unchanged")
    else:
        log.info(f"act: {name} v{version} registered as rejected; @champion unchanged")
    lineage.set_tags(ctx.parent_run_id, {"registered_version": version, "decision": action})
    return out


def _start_canary(ctx: WeekRun, client, decision: dict, version: str, champion: str) -> dict:
    """The new version ramps in as @challenger; @champion stays until the ramp completes."""
    from tasks.canary import schedule_look, start_canary

    log, name, c = get_run_logger(), ctx.params.registry.model_name, ctx.params.canary
    registry.set_challenger(client, name, version)
    exp = start_canary(ctx.project, ctx.params, challenger=version, champion=champion,
                       metric=decision["evidence"]["metric"], week=ctx.week, reason=decision["summary"])
    if exp.get("superseded"):
        log.info(f"act: experiment {', '.join(exp['superseded'])} superseded by this rollout")
    first = exp["started_at"] + timedelta(minutes=c.recheck_minutes)
    scheduled = exp.get("scheduled_run") or schedule_look(ctx.project, ctx.params, exp, first)
    canary = {"experiment_id": exp["id"], "steps": list(c.steps), "look": scheduled}
    client.set_model_version_tag(name, version, "canary", json.dumps(canary))
    alerts.announce(alerts.CANARY_STARTED, f"model.{name}", f"{name} v{version} ramps in as @challenger "
                    f"(canary {exp['id']}: {' → '.join(f'{x:.0%}' for x in c.steps)}): {decision['summary']}",
                    version=version)
    log.info(f"act: {name} v{version} is @challenger on {c.steps[0]:.0%} of units (canary {exp['id']}; then "
             f"{' → '.join(f'{x:.0%}' for x in c.steps[1:])}, each step held {c.hold_hours:g} h and "
             f"{c.min_outcomes:,} outcomes); @champion stays v{champion} until the ramp completes")
    return canary


def _promote(ctx: WeekRun, client, decision: dict, version: str, champion: str | None) -> dict:
    """The new version is @champion at once; a running A/B experiment ends, superseded."""
    from tasks.ab import end_experiments_on_promotion

    log, name = get_run_logger(), ctx.params.registry.model_name
    previous = registry.promote(client, name, version, champion)
    log.info(f"act: {name} v{version} is now @champion" + (f" (v{previous} kept as @previous-champion; "
             f"roll back with `python -m flows.rollback`)" if previous else ""))
    alerts.announce(alerts.PROMOTED, f"model.{name}", f"{name} v{version} is @champion (week {ctx.week}"
                    + (f", v{previous} kept as @previous-champion): " if previous else "): ")
                    + decision["summary"], version=version)
    ended = end_experiments_on_promotion(ctx.project, ctx.params, version)
    if ended:
        log.info(f"act: A/B experiment {', '.join(ended)} ended (superseded by this promotion)")
    return {"previous": previous} if previous else {}


def _start_ab(ctx: WeekRun, client, decision: dict, version: str, champion: str | None) -> dict:
    """The new version is @challenger in an A/B experiment, its analysis scheduled for the planned end."""
    from tasks.ab import schedule_analysis, start_experiment

    log, name = get_run_logger(), ctx.params.registry.model_name
    registry.set_challenger(client, name, version)
    exp = start_experiment(ctx.project, ctx.params, challenger=version, champion=champion,
                           metric=decision["evidence"]["metric"], week=ctx.week, reason=decision["summary"],
                           champion_loss_cv=decision.get("champion_loss_cv"))
    if exp.get("superseded"):
        log.info(f"act: A/B experiment {', '.join(exp['superseded'])} superseded by this one")
    scheduled = exp.get("scheduled_run") or schedule_analysis(ctx.project, ctx.params, exp, exp["planned_end"])
    request = {"experiment_id": exp["id"], "model": name, "champion_version": exp["champion_version"],
               "challenger_version": version, "share": exp["share"], "start": exp["started_at"].isoformat(),
               "planned_end": exp["planned_end"].isoformat(), "max_end": exp["max_end"].isoformat(),
               "planned_units": exp["planned_units"], "metric": exp["metric"], "week": ctx.week,
               "reason": decision["summary"], "analysis_run": scheduled}
    client.set_model_version_tag(name, version, "ab_request", json.dumps(request))
    alerts.announce(alerts.AB_STARTED, f"model.{name}", f"{name} v{version} is @challenger in A/B experiment "
                    f"{exp['id']} ({exp['share']:.0%} of units, until {request['planned_end'][:10]}): "
                    f"{decision['summary']}", version=version)
    write_json(ctx.run_dir / "ab_request.json", request)
    log.info(f"act: {name} v{version} is @challenger; A/B experiment {exp['id']} started "
             f"({request['share']:.0%} of units, {exp['planned_units']:,} units with outcomes planned, "
             f"analysis {'scheduled for' if scheduled else 'due'} {request['planned_end'][:10]})")
    return request
