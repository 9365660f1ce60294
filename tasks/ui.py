"""What people see in the Prefect UI: the decision with its evidence, a metrics table, links."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks import lineage
from tasks.context import WeekRun

ICON = {"promote": "✅ promote", "ab_test": "🧪 A/B test", "hold": "⏸ hold", "reject": "⛔ reject"}


def run_link(ctx: WeekRun, run_id: str) -> str | None:
    base = lineage.ui_url()
    return f"{base}/#/experiments/{ctx.experiment_id}/runs/{run_id}" if base else None


def lineage_line(ctx: WeekRun, link: str | None) -> str:
    """Where the week's MLflow run is: a link to the UI, or the run id and the store."""
    return (f"[MLflow run]({link})" if link
            else f"MLflow run `{ctx.parent_run_id}` in `{lineage.tracking_uri(ctx.project)}`")


@task(name="publish decision to the Prefect UI", cache_policy=NO_CACHE)
def publish(ctx: WeekRun, decision: dict, outcome: dict, trained: dict, drift: dict) -> None:
    key = f"week-{ctx.week}"
    m = trained["metrics"]
    metric = m["metric"]
    comp = decision["evidence"].get("comparison")
    link = run_link(ctx, ctx.parent_run_id)
    where = lineage_line(ctx, link)
    version = outcome.get("version")
    lines = [f"# Week {ctx.week}: {ICON.get(decision['action'], decision['action'])}", "",
             f"**{decision['summary']}**", "", "## Evidence", *[f"- {r}" for r in decision["reasons"]], "",
             f"Registered: {outcome.get('model', '')} v{version}" if version else "Registered: nothing (dry run)",
             *([f"Canary rollout `{outcome['canary']['experiment_id']}`: "
                + " → ".join(f"{x:.0%}" for x in outcome["canary"]["steps"])
                + "; @champion moves when the ramp completes (`python -m flows.canary` to look now)"]
               if outcome.get("canary") else []),
             "", f"Lineage: {where}; drift report `{drift['report']['html']}`", ""]
    drifted = [f"`{c}` ({v['method']} " + (f"{v['statistic']:.3g})" if v.get("statistic") is not None else "n/a)")
               for c, v in drift["columns"].items() if v["drifted"]]
    lines.append(f"Drifted columns: {', '.join(drifted) if drifted else 'none'}")
    create_markdown_artifact(key=f"decision-{key}".lower(), markdown="\n".join(lines),
                             description=f"Decision for week {ctx.week}")
    rows = [{"model": "candidate", metric: round(m["model"][metric], 4), "rows": m["model"]["rows"]},
            {"model": "naive baseline", metric: round(m["baseline"][metric], 4), "rows": m["baseline"]["rows"]}]
    if comp:
        rows.insert(1, {"model": f"champion v{decision['champion_version']}", metric: round(comp["champion"], 4),
                        "rows": comp["rows"]})
    create_table_artifact(key=f"metrics-{key}".lower(), table=rows, description=f"Holdout {metric}, week {ctx.week}")
    if link:
        create_link_artifact(key=f"mlflow-{key}".lower(), link=link, link_text="MLflow run (lineage)")
        create_link_artifact(key=f"drift-{key}".lower(), link=f"{link}/artifacts/drift/drift_report.html",
                             link_text="Evidently drift report")
    else:
        create_link_artifact(key=f"drift-{key}".lower(), link=drift["report"]["html"] and
                             f"file://{drift['report']['html']}", link_text="Evidently drift report (local file)")


@task(name="publish decision to the Prefect UI", cache_policy=NO_CACHE)
def publish_held(ctx: WeekRun, decision: dict) -> None:
    """A held week's decision: what broke, where the batch is, the checks against their bounds."""
    link = run_link(ctx, ctx.parent_run_id)
    where = lineage_line(ctx, link)
    joint = decision["evidence"]["joint"]
    rows = [f"| `{f['check']}` | {f['statistic']:.3g} | "
            + (f"{f['threshold']:.3g}" if f["threshold"] is not None else "n/a")
            + f" | {'**yes**' if f['flagged'] else 'no'} |" for f in joint["checks"]]
    lines = [f"# Week {ctx.week}: {ICON['hold']}", "", f"**{decision['summary']}**", "", "## Evidence",
             *[f"- {r}" for r in decision["reasons"]], "",
             f"## Joint checks (against {joint['reference_weeks']} reference weeks, bounds from "
             f"{joint['null_weeks']} past weeks)", "", "| check | statistic | bound | flagged |", "|---|---|---|---|",
             *rows, "", f"Lineage: {where}"]
    create_markdown_artifact(key=f"decision-week-{ctx.week}".lower(), markdown="\n".join(lines),
                             description=f"Decision for week {ctx.week}")
