"""Train through `dvc repro` (the exact pipeline a user reproduces locally) and log the candidate to MLflow."""
from __future__ import annotations

import contextlib
import json
import logging
import warnings
from datetime import date, timedelta
from importlib.metadata import version
from pathlib import Path

import joblib
import pandas as pd
import yaml
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.features import feature_frame
from ml.wording import metric_text
from stages.common import WEEK_FILE, write_week
from tasks import lineage
from tasks.context import WeekRun


def lock_hashes(project: Path) -> dict[str, str]:
    """Content hashes DVC recorded for the data and model of this run (from dvc.lock)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    out = {}
    for stage in ("land", "prepare", "search", "train", "evaluate"):
        for entry in lock.get(stage, {}).get("deps", []) + lock.get(stage, {}).get("outs", []):
            if entry["path"].startswith("data/"):
                out[entry["path"]] = entry.get("md5", "")
    return out


@contextlib.contextmanager
def _dvc_logs_once():
    """DVC's lines once, through the run's log (console and UI), not also through DVC's own stdout handlers;
    and without its "To track the changes with git, run: ..." hints, which a weekly run does not act on."""
    dvc = logging.getLogger("dvc")
    own = list(dvc.handlers)
    chatter = [logging.getLogger(n) for n in ("dvc.repo.scm_context", "dvc.dvcfile", "dvc.repo.reproduce")]
    levels = [lg.level for lg in chatter]  # git hints, "Updating lock file", blank separators
    for h in own:
        dvc.removeHandler(h)
    for lg in chatter:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(chatter, levels, strict=True):
            lg.setLevel(level)
        for h in own:
            dvc.addHandler(h)


def mend_rwlock(project: Path) -> Path | None:
    """DVC rewrites `.dvc/tmp/rwlock` in place; a run killed while it writes (a worker lost with its run) leaves it
    empty or cut short, and every later DVC command fails on it ("unable to read RWLock-file"). An unreadable one
    is set aside as `rwlock.corrupt-<utc time>` (nothing deleted); returns where. A readable one is DVC's to judge
    (weekly runs never overlap: the deployment's concurrency limit is 1)."""
    from datetime import UTC, datetime

    path = project / ".dvc" / "tmp" / "rwlock"
    try:
        json.loads(path.read_text(encoding="utf-8"))
        return None
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        aside = path.with_name(f"rwlock.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}")
        path.replace(aside)
        return aside


@contextlib.contextmanager
def dvc_repo(project: Path):
    """DVC's Repo of the project, worked from inside it (DVC's API resolves paths and the stage graph against the
    cwd), its lines logged once, and a lock registry a killed run left unreadable set aside first."""
    from dvc.repo import Repo

    if (aside := mend_rwlock(project)) is not None:
        get_run_logger().warning(f"dvc: an earlier run was killed while DVC wrote its lock registry; the unreadable "
                                 f"file is kept as {aside}")
    with contextlib.chdir(project), _dvc_logs_once(), Repo(str(project)) as repo:
        yield repo


@task(name="dvc repro (search → train and refit → evaluate)", cache_policy=NO_CACHE)
def reproduce(ctx: WeekRun) -> dict:
    """Record the week in week.yaml, run the DVC pipeline; returns metrics and data hashes."""
    log = get_run_logger()
    with lineage.step_run(ctx, "train"):
        import mlflow

        write_week(ctx.path("params.yaml"), ctx.week)
        stale = ctx.path("data", "raw.dvc")  # data/raw was `dvc add`ed before it became the `land` stage's output
        if stale.exists():
            stale.unlink()
        with dvc_repo(ctx.project) as repo:
            stages = repo.reproduce()
            pushed = push_data(repo)
        ran = [s.addressing for s in stages]
        metrics = json.loads(ctx.path("data", "eval", "metrics.json").read_text())
        info = json.loads(ctx.path("data", "model", "info.json").read_text())
        hashes = lock_hashes(ctx.project)
        key = metrics["metric"]
        mlflow.log_params({"family": info["family"], "candidate": info.get("candidate") or "-",
                           "estimator": info["estimator"], "seed": info["seed"],
                           "train_rows": info["train_rows"], "stages_run": ",".join(ran) or "none (cached)"})
        mlflow.log_metrics({f"holdout_{key}": metrics["model"][key], f"baseline_{key}": metrics["baseline"][key],
                            "fit_seconds": info["fit_seconds"]})
        mlflow.set_tags({**{f"dvc.md5.{k}": v for k, v in hashes.items()}, "dvc.remote": pushed["remote"],
                         "dvc.pushed": pushed["state"]})
        mlflow.log_artifact(str(ctx.path("data", "eval", "metrics.json")))
        mlflow.log_artifacts(str(ctx.path("data", "eval", "plots")), "plots")
        mlflow.log_artifact(str(ctx.path("dvc.lock")))
        mlflow.log_artifact(str(ctx.path("params.yaml")))
        mlflow.log_artifact(str(ctx.path(WEEK_FILE)))
        chosen = f"candidate {info['candidate']}: " if info.get("candidate") else ""
        log.info(f"train: dvc repro ran {', '.join(ran) or 'nothing (all cached)'}; {chosen}{info['family']} on "
                 f"{info['train_rows']:,} rows; holdout {key} {metric_text(metrics['model'][key])} vs naive "
                 f"{metric_text(metrics['baseline'][key])}")
        if pushed["remote"] != "none":
            (log.info if pushed["state"] != "failed" else log.warning)(f"dvc push: {pushed['summary']}")
    return {"metrics": metrics, "info": info, "hashes": hashes, "stages_run": ran}


def push_data(repo) -> dict[str, str]:
    """Push the run's data and model to the default DVC remote, when one is configured, so that `dvc pull` on
    another machine restores any logged version. A failed push does not undo the week: its data stays in the
    local cache, the run says so (tag `dvc.pushed=failed`) and the next run's push sends it."""
    name = repo.config["core"].get("remote")
    if not name:
        return {"remote": "none", "state": "no remote", "summary": "no default DVC remote configured"}
    url = repo.config["remote"].get(name, {}).get("url", "?")
    try:
        count = repo.push()
    except Exception as e:  # the remote is down or refuses: the week's decision stands, the data is still local
        return {"remote": url, "state": "failed",
                "summary": f"to {name} ({url}) failed, data kept in .dvc/cache: {str(e).splitlines()[0][:300]}"}
    return {"remote": url, "state": "yes", "summary": f"{count} file(s) to {name} ({url})"}


def fastpath_check(model, holdout: pd.DataFrame, tolerance: float = 1e-6) -> str:
    """Whether the serving fast path (ml/fastpath.py) gives this model's predictions on the whole holdout:
    `verified: ...`, `differs: ...` (the service then keeps the pipeline) or `none: ...` (no fast path)."""
    from ml.fastpath import agreement, compile_rows

    path = compile_rows(model)
    if path is None:
        return f"none: no fast path for {type(model.steps[-1][1]).__name__}"
    try:
        diff = agreement(model, path, holdout)
    except ValueError as e:
        return f"differs: {str(e)[:200]}"
    verdict = "verified" if diff <= tolerance else "differs"
    return f"{verdict}: max |difference| {diff:.3g} on {len(holdout):,} holdout rows"


def prime_schema(dataset, frame: pd.DataFrame, rows: int = 5000) -> None:
    """Give an MLflow dataset its schema from a sample's column types and the whole frame's nulls (vectorised).
    MLflow would infer it when the dataset is logged, row by row in Python: 6 s of a weekly run at 500k rows."""
    import functools

    from mlflow.models import infer_signature
    from mlflow.types import ColSpec, Schema

    if not isinstance(getattr(type(dataset), "schema", None), functools.cached_property):
        return  # another MLflow: let it infer
    cols = infer_signature(frame.head(rows)).inputs.inputs
    nulls = frame.isna().any()
    dataset.__dict__["schema"] = Schema([ColSpec(c.type, c.name, required=not bool(nulls[c.name])) for c in cols])


def contract_signature(signature, required: tuple[str, ...]):
    """The signature with the data contract's nullability: only `validation.required` features may never be null
    (the prediction service accepts null for the others, as the models do)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    cols = [ColSpec(c.type, c.name, required=c.name in required) for c in signature.inputs.inputs]
    return ModelSignature(inputs=Schema(cols), outputs=signature.outputs)


def pip_requirements(family: str) -> list[str]:
    pkgs = ["scikit-learn", "pandas", "numpy", "scipy", "joblib", "pyarrow"] + (["torch"] if family == "mlp" else [])
    return [f"{p}=={version(p).split('+')[0]}" for p in pkgs]


@task(name="log candidate model + datasets to MLflow", cache_policy=NO_CACHE)
def log_candidate(ctx: WeekRun, trained: dict) -> dict:
    """Log the candidate (signature, input example, pinned requirements, ml/ code) and the datasets it saw."""
    import mlflow
    from mlflow.models import infer_signature

    log = get_run_logger()
    s = ctx.params.source
    refit = ctx.params.policy.refit
    model = joblib.load(ctx.path("data", "refit" if refit else "model", "model.pkl"))
    train = pd.read_parquet(ctx.path("data", "prepared", "train.parquet"))
    holdout = pd.read_parquet(ctx.path("data", "prepared", "holdout.parquet"))
    hashes = trained["hashes"]
    with lineage.step_run(ctx, "log-candidate") as run:
        for frame, name, context in ((train, "training-window", "training"), (holdout, "holdout", "evaluation")):
            path = f"data/prepared/{'train' if context == 'training' else 'holdout'}.parquet"
            with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both mean the local file
                warnings.simplefilter("ignore", UserWarning)
                ds = mlflow.data.from_pandas(frame, source=str(ctx.path(path)), name=f"{name}-{ctx.week}",
                                             targets=s.target, digest=hashes.get(path, "")[:32] or None)
                prime_schema(ds, frame)
                mlflow.log_input(ds, context=context)  # (and the int-column schema hint, meant for signatures)
        # Numeric inputs as doubles in the signature: a missing value at serving time must not break the schema.
        example = feature_frame(holdout.head(5), s.numeric_features, s.categorical_features)
        out = model.predict(example) if s.task == "regression" else model.predict_proba(example)
        family = trained["info"]["family"]
        # cloudpickle, not skops: importing skops costs 3.6 s in every process that saves or loads a model
        # (it walks all of sklearn and imports torch). Models come only from this pipeline's own registry.
        logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)  # the pickle caution is the line above
        info = mlflow.sklearn.log_model(model, name="model", signature=contract_signature(
                                            infer_signature(example, out), ctx.params.validation.required),
                                        input_example=example, pip_requirements=pip_requirements(family),
                                        code_paths=[str(ctx.path("ml"))], serialization_format="cloudpickle")
        until = trained_until(ctx.as_of, refit)
        mlflow.set_tags({"as_of": ctx.week, "trained_until": until.isoformat(), "refit": str(refit).lower(),
                         "recipe": recipe_id(ctx.params), "serving.fastpath": fastpath_check(model, holdout),
                         **{f"dvc.md5.{k}": v for k, v in hashes.items()}})
        what = "refit on the window ending with the holdout week" if refit else "candidate"
        log.info(f"log: {trained['info']['family']} {what} logged as {info.model_uri} (run {run.info.run_id[:8]})")
    return {"model_uri": info.model_uri, "run_id": run.info.run_id, "trained_until": until.isoformat(),
            "refit": refit, "recipe": recipe_id(ctx.params)}


def recipe_id(params) -> str:
    """A short digest of what makes a model's recipe: task, target, features, the training section and the
    candidate search (the procedure that picks the family week by week). The freshness track record compares only
    models of the same recipe, so a recipe change is not counted as the gain of newer data."""
    import dataclasses
    import hashlib

    s, se = params.source, params.search
    search = ({"candidates": se.candidates, "validation_weeks": se.validation_weeks, "min_gain": se.min_gain}
              if se.candidates else None)
    key = json.dumps({"task": s.task, "target": s.target, "numeric": list(s.numeric_features),
                      "categorical": list(s.categorical_features), "train": dataclasses.asdict(params.train),
                      **({"search": search} if search else {})}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def trained_until(as_of: date, refit: bool) -> date:
    """The (exclusive) end of the data a week's logged model was trained on: the end of the holdout week for a
    refit, the start of the holdout week for the candidate itself."""
    return as_of if refit else as_of - timedelta(days=7)
