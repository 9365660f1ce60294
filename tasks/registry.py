"""Registry actions through aliases: `champion`, `previous-champion` (rollback) and `challenger` (A/B)."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stages.common import write_json
from tasks import alerts, lineage
from tasks.context import WeekRun
from tasks.retry import retry_if_transient

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous-champion", "challenger"


def alias_version(name: str, alias: str) -> str | None:
    """Version number behind `name@alias`, or None when the model or alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def load_champion(name: str) -> tuple[str, Any] | None:
    """(version, model) of the current champion, or None before the first promotion."""
    import mlflow

    version = alias_version(name, CHAMPION)
    if version is None:
        return None
    return version, mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")


def trained_until(tags: dict) -> date | None:
    """The (exclusive) end of a version's training data: its `trained_until` tag, or for versions registered
    before that tag existed, the start of the week it was judged on."""
    if tags.get("trained_until"):
        return date.fromisoformat(tags["trained_until"])
    if tags.get("as_of"):
        return date.fromisoformat(tags["as_of"]) - timedelta(days=7)
    return None


def version_tags(name: str, version: str) -> dict:
    from mlflow import MlflowClient

    return dict(MlflowClient().get_model_version(name, version).tags)


def stale_version(name: str, before: date, recipe: str, max_weeks: int = 4) -> tuple[str, date] | None:
    """The newest version of the same recipe trained on data ending at least a week before `before` (and at most
    `max_weeks` weeks): what the candidate is compared with to measure what newer data buys. None when there is
    none."""
    from mlflow import MlflowClient

    best = None
    for v in MlflowClient().search_model_versions(f"name='{name}'"):
        if v.tags.get("recipe") != recipe:
            continue
        until = trained_until(v.tags)
        if until is None or not before - timedelta(days=7 * max_weeks) <= until <= before - timedelta(days=7):
            continue
        if best is None or until > best[1] or (until == best[1] and int(v.version) > int(best[0])):
            best = (str(v.version), until)
    return best


def freshness_history(name: str, as_of: date, weeks: int) -> list[tuple[float, float]]:
    """(gain, standard error) of one more week of data, measured by the weekly runs of the `weeks` weeks before
    `as_of` (tags `freshness.gain` / `freshness.se` of the versions they registered): the track record."""
    from mlflow import MlflowClient

    by_week: dict[str, tuple[float, float]] = {}
    lo = as_of - timedelta(days=7 * weeks)
    for v in MlflowClient().search_model_versions(f"name='{name}'"):
        t = v.tags
        if "freshness.gain" not in t or not t.get("as_of"):
            continue
        if lo <= date.fromisoformat(t["as_of"]) < as_of:
            by_week[t["as_of"]] = (float(t["freshness.gain"]), float(t["freshness.se"]))
    return [by_week[k] for k in sorted(by_week)]


def register(ctx: WeekRun, model_uri: str, run_id: str, decision: dict, lineage_tags: dict[str, str]) -> str:
    """Register the candidate with its decision attached (never a version without one); returns the version."""
    import mlflow

    tags = {"decision": decision["action"], "decision.summary": decision["summary"][:4900],
            "decision.reasons": json.dumps(decision["reasons"])[:4900], "as_of": ctx.week,
            "decision.conclusive": str(bool(decision["evidence"].get("conclusive"))).lower(),
            "compared_with": str(decision.get("champion_version") or ""),
            **{f"freshness.{k}": str(v) for k, v in (decision.get("freshness") or {}).items() if k in ("gain", "se")},
            "flow.parent_run_id": ctx.parent_run_id, **lineage_tags}
    mv = mlflow.register_model(model_uri, ctx.params.registry.model_name, tags=tags)
    from mlflow import MlflowClient

    MlflowClient().update_model_version(mv.name, mv.version, description=decision["summary"][:4900])
    return str(mv.version)


@task(name="act on the decision (registry aliases)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def act(ctx: WeekRun, decision: dict, candidate: dict, lineage_tags: dict[str, str]) -> dict:
    """promote: champion -> new version, old one kept as previous-champion; ab_test: challenger alias + A/B
    request; hold / reject: the version keeps its reason, no alias moves. A dry run registers nothing."""
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
    version = str(done[0].version) if done else register(ctx, candidate["model_uri"], candidate["run_id"], decision,
                                                     tags)
    out: dict[str, Any] = {"action": action, "version": version, "model": name}
    champion = alias_version(name, CHAMPION) if action in ("promote", "ab_test") else None
    if action == "promote" and ctx.params.canary.enabled and champion and champion != version:
        from tasks.canary import schedule_look, start_canary

        client.set_registered_model_alias(name, CHALLENGER, version)
        exp = start_canary(ctx.project, ctx.params, challenger=version, champion=champion,
                           metric=decision["evidence"]["metric"], week=ctx.week, reason=decision["summary"])
        if exp.get("superseded"):
            log.info(f"act: experiment {', '.join(exp['superseded'])} superseded by this rollout")
        c = ctx.params.canary
        first = exp["started_at"] + timedelta(minutes=c.recheck_minutes)
        scheduled = exp.get("scheduled_run") or schedule_look(ctx.project, ctx.params, exp, first)
        out["canary"] = {"experiment_id": exp["id"], "steps": list(c.steps), "look": scheduled}
        client.set_model_version_tag(name, version, "canary", json.dumps(out["canary"]))
        alerts.announce(alerts.CANARY_STARTED, f"model.{name}", f"{name} v{version} ramps in as @challenger "
                        f"(canary {exp['id']}: {' → '.join(f'{x:.0%}' for x in c.steps)}): {decision['summary']}",
                        version=version)
        log.info(f"act: {name} v{version} is @challenger on {c.steps[0]:.0%} of units (canary {exp['id']}; then "
                 f"{' → '.join(f'{x:.0%}' for x in c.steps[1:])}, each step held {c.hold_hours:g} h and "
                 f"{c.min_outcomes:,} outcomes); @champion stays v{champion} until the ramp completes")
    elif action == "promote":
        from tasks.ab import end_experiments_on_promotion

        previous = champion
        if previous and previous != version:
            client.set_registered_model_alias(name, PREVIOUS, previous)  # first, so a crash never loses it
            out["previous"] = previous
        client.set_registered_model_alias(name, CHAMPION, version)
        log.info(f"act: {name} v{version} is now @champion" + (f" (v{previous} kept as @previous-champion; "
                 f"roll back with `python -m flows.rollback`)" if previous else ""))
        alerts.announce(alerts.PROMOTED, f"model.{name}", f"{name} v{version} is @champion (week {ctx.week}"
                        + (f", v{previous} kept as @previous-champion): " if previous else "): ")
                        + decision["summary"], version=version)
        ended = end_experiments_on_promotion(ctx.project, ctx.params, version)
        if ended:
            log.info(f"act: A/B experiment {', '.join(ended)} ended (superseded by this promotion)")
    elif action == "ab_test":
        from tasks.ab import schedule_analysis, start_experiment

        client.set_registered_model_alias(name, CHALLENGER, version)
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
        out["ab_request"] = request
        log.info(f"act: {name} v{version} is @challenger; A/B experiment {exp['id']} started "
                 f"({request['share']:.0%} of units, {exp['planned_units']:,} units with outcomes planned, "
                 f"analysis {'scheduled for' if scheduled else 'due'} {request['planned_end'][:10]})")
    elif action == "hold":
        log.info(f"act: {name} v{version} registered and held: the running experiment decides; aliases unchanged")
    else:
        log.info(f"act: {name} v{version} registered as rejected; @champion unchanged")
    lineage.set_tags(ctx.parent_run_id, {"registered_version": version, "decision": action})
    return out


def promote_challenger(client, name: str, version: str, previous: str) -> None:
    """@challenger `version` becomes @champion; the version it replaces is kept as @previous-champion (set first,
    so a crash never loses it)."""
    client.set_registered_model_alias(name, PREVIOUS, previous)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.delete_registered_model_alias(name, CHALLENGER)


def rollback(name: str) -> dict:
    """Put @previous-champion back as @champion; the demoted version is tagged and stays registered."""
    from mlflow import MlflowClient

    client = MlflowClient()
    current, previous = alias_version(name, CHAMPION), alias_version(name, PREVIOUS)
    if previous is None:
        raise RuntimeError(f"model '{name}' has no @{PREVIOUS} version to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    if current:
        client.set_model_version_tag(name, current, "rolled_back_at", datetime.now(UTC).isoformat())
    return {"model": name, "champion": str(previous), "demoted": str(current) if current else None}
