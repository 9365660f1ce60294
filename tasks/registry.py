"""Registry actions through aliases: `champion`, `previous-champion` (rollback) and `challenger` (A/B)."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ml.names import CHALLENGER, CHAMPION, PREVIOUS  # noqa: F401 (tasks.registry.CHAMPION)
from tasks.context import WeekRun


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


def set_challenger(client, name: str, version: str) -> None:
    """`version` becomes @challenger (an A/B test or a canary ramp routes a share of units to it)."""
    client.set_registered_model_alias(name, CHALLENGER, version)


def retire_challenger(client, name: str) -> None:
    """@challenger is removed (its experiment ended); the version stays registered."""
    if alias_version(name, CHALLENGER) is not None:
        client.delete_registered_model_alias(name, CHALLENGER)


def promote(client, name: str, version: str, previous: str | None) -> str | None:
    """`version` becomes @champion; the version it replaces (when another) is kept as @previous-champion, set
    first so a crash never loses it. Returns the version kept."""
    kept = previous if previous and previous != version else None
    if kept:
        client.set_registered_model_alias(name, PREVIOUS, kept)
    client.set_registered_model_alias(name, CHAMPION, version)
    return kept


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
