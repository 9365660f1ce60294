"""Compare the candidate with the champion on the same newest week, report drift, and decide."""
from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.ab import loss_cv
from ml.metrics import PRIMARY, predict, row_loss, summarize
from ml.policy import decide as apply_policy
from ml.stats import Comparison, compare_losses
from stages.common import write_json
from stages.ingest import batch_path
from tasks import lineage, registry
from tasks.context import WeekRun
from tasks.retry import retry_if_transient


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
        mlflow.log_params({"champion_version": version, "clusters": comp.clusters, "rows": comp.rows})
        mlflow.log_metrics({f"champion_{key}": comp.champion, f"candidate_{key}": comp.candidate,
                            "rel_change": comp.rel_change, "ci_low": comp.ci_low, "ci_high": comp.ci_high})
        lineage.log_json({"comparison": comp.to_dict(), "champion_metrics": champ_metrics, "slices": slices},
                         "compare/comparison.json")
        log.info(f"compare: {key} {comp.candidate:.2f} (candidate) vs {comp.champion:.2f} (champion v{version}): "
                 f"{comp.rel_change:+.1%}, {comp.confidence:.0%} CI {comp.ci_low:+.1%}..{comp.ci_high:+.1%}")
    return {"comparison": comp.to_dict(), "slices": slices, "champion_version": version,
            "champion_metrics": champ_metrics, "champion_loss_cv": loss_cv(champ_loss)}


@task(name="decide: promote, A/B test or reject", cache_policy=NO_CACHE)
def decide(ctx: WeekRun, trained: dict, compared: dict, drift: dict) -> dict:
    """Apply the policy in params to the evidence; decision.json carries the reasons in words."""
    log = get_run_logger()
    m = trained["metrics"]
    comp = Comparison(**compared["comparison"]) if compared["comparison"] else None
    drift_for_policy = {k: drift[k] for k in ("n_drifted", "n_columns", "share_drifted")}
    pol = ctx.params.policy
    wins = registry.prior_wins(ctx.params.registry.model_name, compared["champion_version"], ctx.as_of,
                               pol.confirm_weeks - 1)
    d = apply_policy(pol, m["metric"], m["model"], m["baseline"], comp, compared["slices"], drift_for_policy,
                     prior_wins=wins, champion=compared.get("champion_metrics"))
    out = {"week": ctx.week, "action": d.action, "summary": d.summary, "reasons": d.reasons,
           "champion_version": compared["champion_version"], "evidence": d.evidence, "dry_run": ctx.dry_run,
           "champion_loss_cv": compared.get("champion_loss_cv")}
    write_json(ctx.run_dir / "decision.json", out)
    with lineage.step_run(ctx, "decide"):
        import mlflow

        lineage.log_json(out, "decision.json")
        mlflow.set_tags({"decision": d.action, "decision.summary": d.summary})
    log.info(f"decide: {d.summary}")
    return out
