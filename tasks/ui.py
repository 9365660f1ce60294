"""What people see in the Prefect UI: the decision with its evidence, a metrics table, links."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks import lineage
from tasks.context import WeekRun

ICON = {"promote": "✅ promote", "ab_test": "🧪 A/B test", "hold": "⏸ hold", "reject": "⛔ reject"}
AB_ICON = {"promote": "✅ promote", "rollback": "↩️ roll back", "continue": "⏳ continue", "invalid": "⚠️ invalid"}
CANARY_ICON = {"advance": "⏩ advance", "hold": "⏳ hold", "complete": "✅ complete", "rollback": "↩️ roll back",
        "ended": "⏹ ended"}


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


def publish_monitor(key: str, title: str, body: str, description: str) -> None:
    """A monitor's verdict in the Prefect UI (one markdown artifact per monitor, its latest under `key`)."""
    create_markdown_artifact(key=key, markdown=f"# {title}\n\n{body}", description=description)


def live_monitor_page(out: dict) -> tuple[str, str]:
    """The live monitor's verdict and page body: the reason, the rollback check, the loss per day."""
    rollback = out.get("rollback", {})
    verdict = ("degraded" + (": rolled back" if rollback.get("rolled_back") else "")
               + (": retrain started" if out.get("triggered_flow_run") else "") if out["degraded"] else out["status"])
    checked = f"Rollback check: {rollback['reason']}\n\n" if rollback else ""
    table = "".join(f"| {d['day']} | {d['outcomes']:,} | {d['loss']:.3g} |\n" for d in out.get("per_day", []))
    return verdict, (f"{out['reason']}\n\n" + checked
                     + (f"| day | outcomes | live loss |\n|---|---|---|\n{table}" if table else ""))


def publish_ab(run_id: str, params, experiment: dict, traffic: dict, decision: dict, outcome: dict) -> None:
    """An A/B look in the Prefect UI: the decision with its evidence, and units, outcomes and loss per variant."""
    ev = decision["evidence"]
    lift = ev.get("lift")
    key = f"ab-{experiment['id']}".lower().replace(".", "-")
    moved = ("@champion → v" + outcome["champion"] if decision["action"] == "promote" else
             "@challenger removed, @champion stays v" + str(outcome["champion"]) if decision["action"] == "rollback"
             else "nothing moved")
    lines = [f"# A/B {experiment['id']}: {AB_ICON.get(decision['action'], decision['action'])}", "",
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


def publish_canary(run_id: str, params, experiment: dict, traffic: dict, decision: dict, outcome: dict) -> None:
    """A canary look in the Prefect UI: the step with its guardrails, and the guardrails as a table."""
    steps = experiment["plan"]["steps"]
    key = f"canary-{experiment['id']}".lower().replace(".", "-")
    ramp = " → ".join(f"**{s:.0%}**" if i == experiment["step"] else f"{s:.0%}" for i, s in enumerate(steps))
    lines = [f"# Canary {experiment['id']}: {CANARY_ICON.get(decision['action'], decision['action'])}", "",
             f"**{decision['summary']}**", "", f"Ramp: {ramp}; now {outcome['share']:.0%} of units on "
             f"v{experiment['challenger_version']}, @champion v{outcome['champion']}", "", "## Guardrails",
             *[f"- {r}" for r in decision["reasons"]], "",
             f"v{experiment['challenger_version']} over v{experiment['champion_version']} since "
             f"{experiment['started_at']:%Y-%m-%d %H:%M} UTC; MLflow run `{run_id}` in experiment "
             f"'{params.ab.experiment}'"]
    create_markdown_artifact(key=key, markdown="\n".join(lines), description=f"Canary rollout {experiment['id']}")
    create_table_artifact(key=f"{key}-guardrails", table=[
        {"guardrail": g["name"], "state": "ok" if g["ok"] else "FAILED" if g["ok"] is False else "waiting for data",
         "detail": g["detail"]} for g in decision["guardrails"]], description="Guardrails at this look")
