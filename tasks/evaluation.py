"""Compare the candidate with the champion on the same newest week, report drift, and decide."""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.ab import loss_cv, plan_units
from ml.metrics import PRIMARY, predict, row_loss, summarize
from ml.policy import ABPlan, ci_sd, track_record
from ml.policy import decide as apply_policy
from ml.stats import Comparison, compare_losses, paired_bootstrap, resampling_units
from ml.wording import metric_text
from stages.ingest import batch_path
from tasks import lineage, registry
from tasks.context import WeekRun
from tasks.retry import retry_if_transient
from tasks.training import recipe_id, trained_until


@task(name="compare candidate with champion", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def compare_with_champion(ctx: WeekRun) -> dict:
    """Score champion and candidate on the same holdout rows: paired CI of the change and slice guardrails."""
    log = get_run_logger()
    p, s = ctx.params, ctx.params.source
    preds = pd.read_parquet(ctx.path("data", "eval", "predictions.parquet"))
    holdout = pd.read_parquet(ctx.path("data", "prepared", "holdout.parquet"))
    with lineage.step_run(ctx, "compare"):
        import mlflow

        champ = registry.load_champion(p.registry.model_name)
        if champ is None:
            log.info("compare: no champion yet: the absolute thresholds alone will decide")
            mlflow.set_tag("champion", "none")
            return {"comparison": None, "slices": [], "champion_version": None}
        version, model = champ
        # The champion may use other columns than today's params: score it on the raw batch, same rows.
        raw = pd.read_parquet(batch_path(ctx.path("data", "raw"), ctx.as_of))
        raw = raw[raw[s.target].notna()].reset_index(drop=True)
        if len(raw) != len(holdout):
            raise RuntimeError(f"holdout has {len(holdout)} rows but the raw batch {len(raw)}: rerun dvc repro")
        y = holdout[s.target].to_numpy()
        champ_pred = predict(model, raw, s.task)
        champ_loss = row_loss(s.task, y, champ_pred, getattr(model, "classes_", None))
        cand_loss = preds["loss"].to_numpy()
        comp, slices = compare_losses(champ_loss, cand_loss, holdout, p.policy, seed=p.train.seed,
                                      time_column=s.time_column)
        key = PRIMARY[s.task]
        champ_metrics = summarize(s.task, y, champ_pred, getattr(model, "classes_", None))
        fresh = measure_freshness(ctx, raw, y, cand_loss)
        mlflow.log_params({"champion_version": version, "clusters": comp.clusters, "rows": comp.rows})
        if fresh:
            mlflow.log_metrics({"freshness_gain": fresh["gain"], "freshness_se": fresh["se"]})
        mlflow.log_metrics({f"champion_{key}": comp.champion, f"candidate_{key}": comp.candidate,
                            "rel_change": comp.rel_change, "ci_low": comp.ci_low, "ci_high": comp.ci_high})
        lineage.log_json({"comparison": comp.to_dict(), "champion_metrics": champ_metrics, "slices": slices},
                         "compare/comparison.json")
        log.info(f"compare: {key} {metric_text(comp.candidate)} (candidate) vs {metric_text(comp.champion)} "
                 f"(champion v{version}): "
                 + ("the same predictions on every row (the champion's recipe on its data): nothing to compare"
                    if comp.empty else f"{comp.rel_change:+.1%}, {comp.confidence:.0%} CI {comp.ci_low:+.1%}.."
                                 f"{comp.ci_high:+.1%}")
                 + (f"; one more week of data: {fresh['gain']:+.1%} (vs v{fresh['version']}, trained "
                    f"{fresh['weeks_apart']} week(s) earlier)" if fresh else ""))
    tags = registry.version_tags(p.registry.model_name, version)
    champ_until = registry.trained_until(tags)
    served_until = trained_until(ctx.as_of, p.policy.refit)
    return {"comparison": comp.to_dict(), "slices": slices, "champion_version": version,
            "champion_metrics": champ_metrics, "champion_loss_cv": loss_cv(champ_loss), "freshness": fresh,
            "fresher_weeks": (served_until - champ_until).days // 7 if champ_until else 1,
            "same_recipe": tags.get("recipe") == recipe_id(p)}


def measure_freshness(ctx: WeekRun, raw: pd.DataFrame, y, cand_loss) -> dict | None:
    """The track record's weekly entry: the candidate against the newest registered version trained on data ending
    a week (or a few) earlier, on the same newest week; both are out of time there. The relative change in loss
    per week of newer data, with its standard error. None when there is no such version yet."""
    p, s = ctx.params, ctx.params.source
    import mlflow

    stale = registry.stale_version(p.registry.model_name, ctx.as_of - timedelta(days=7), recipe_id(p))
    if stale is None:
        return None
    version, until = stale
    model = mlflow.sklearn.load_model(f"models:/{p.registry.model_name}/{version}")
    stale_loss = row_loss(s.task, y, predict(model, raw, s.task), getattr(model, "classes_", None))
    comp = paired_bootstrap(stale_loss, cand_loss, resampling_units(raw, p.policy, s.time_column),
                            confidence=p.policy.confidence, samples=p.policy.bootstrap_samples, seed=p.train.seed)
    weeks = max(1, (ctx.as_of - timedelta(days=7) - until).days // 7)
    return {"gain": comp.rel_change / weeks, "se": ci_sd(comp) / weeks, "version": version, "weeks_apart": weeks}


@task(name="decide: promote, A/B test, hold or reject", cache_policy=NO_CACHE)
def decide(ctx: WeekRun, trained: dict, compared: dict, drift: dict) -> dict:
    """Apply the policy in params to the evidence; decision.json carries the reasons in words."""
    from tasks.ab import open_log

    log = get_run_logger()
    m = trained["metrics"]
    p, pol = ctx.params, ctx.params.policy
    comp = Comparison(**compared["comparison"]) if compared["comparison"] else None
    record = track_record([*registry.freshness_history(p.registry.model_name, ctx.as_of, pol.track_weeks - 1),
                           *([(compared["freshness"]["gain"], compared["freshness"]["se"])]
                             if compared.get("freshness") else [])])
    with open_log(ctx.project, p) as ab_log:
        running = ab_log.running_experiment(p.registry.model_name)
    plan = None
    if comp is not None:
        cv = compared.get("champion_loss_cv") or 1.0
        units = plan_units(cv, share=p.ab.share, mde=p.ab.min_detectable_effect, power=p.ab.power,
                           alpha=p.ab.alpha).units
        plan = ABPlan(units=units, per_day=comp.rows / 7, max_days=p.ab.max_duration_days)
    d = apply_policy(pol, m["metric"], m["model"], m["baseline"], comp, compared["slices"], drift,
                     champion=compared.get("champion_metrics"), fresher_weeks=compared.get("fresher_weeks", 1),
                     record=record, running=_brief(running), plan=plan,
                     same_recipe=bool(compared.get("same_recipe")))
    out = {"week": ctx.week, "action": d.action, "summary": d.summary, "reasons": d.reasons,
           "champion_version": compared["champion_version"], "evidence": d.evidence, "dry_run": ctx.dry_run,
           "champion_loss_cv": compared.get("champion_loss_cv"), "freshness": compared.get("freshness")}
    metrics = ({k: d.evidence[k] for k in ("expected_change", "harm_risk")} if "expected_change" in d.evidence
               else None)
    lineage.record_decision(ctx, out, metrics)
    log.info(f"decide: {d.summary}")
    return out


def _brief(experiment: dict | None) -> dict | None:
    if not experiment:
        return None
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in experiment.items()
            if k in ("id", "champion_version", "challenger_version", "started_at", "planned_end", "max_end",
                     "planned_units")}
