"""Nothing unvalidated reaches training: the `land` stage gates backfilled weeks, never lands a quarantined week,
leaves out stub weeks, re-lands the window when the source settings change, and checks every column-naming key
before anything runs. Real DVC-stage commands on UCI bike sharing, onboarded by `cli.init`."""
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from tests.conftest import edit_params, run

PY = sys.executable


def window(repo: Path) -> list[str]:
    """The window's as_of keys, oldest first (training weeks, then the newest week)."""
    from datetime import date, timedelta

    w = yaml.safe_load((repo / "params.yaml").read_text())["window"]
    as_of = date.fromisoformat(str(w["as_of"]))
    return [(as_of - timedelta(days=7 * k)).isoformat() for k in range(w["train_weeks"], -1, -1)]


def landed(repo: Path) -> set[str]:
    return {p.stem for p in (repo / "data/raw").glob("*.parquet")}


def manifest(repo: Path) -> dict:
    return json.loads((repo / "data/raw/_landed.json").read_text())


def test_a_quarantined_week_is_never_landed_from_the_source(bike_repo):
    weeks = window(bike_repo)
    held = bike_repo / "data" / "quarantine" / f"{weeks[3]}-20260101T000000Z"
    held.mkdir(parents=True)
    (held / "reasons.txt").write_text("rejected by the weekly flow\n")
    out = run(["dvc", "repro"], bike_repo).stdout
    assert weeks[3] not in landed(bike_repo) and landed(bike_repo) == set(weeks) - {weeks[3]}
    assert "quarantined before" in manifest(bike_repo)["excluded"][weeks[3]]
    assert "left out" in out  # prepare says which training week it does without


def test_a_stub_week_after_a_gap_is_left_out_and_quarantined(bike_repo):
    weeks = window(bike_repo)
    csv = bike_repo / "data" / "incoming" / "hour.csv"
    df = pd.read_csv(csv)
    t = pd.to_datetime(df["dteday"]) + pd.to_timedelta(df["hr"], unit="h")
    end = pd.Timestamp(weeks[4])
    in_week = (t >= end - pd.Timedelta(days=7)) & (t < end)
    gap = in_week & (t >= end - pd.Timedelta(days=7) + pd.Timedelta(hours=5))  # 5 hours survive the outage
    df[~gap].to_csv(csv, index=False)
    run([PY, "-m", "stages.ingest"], bike_repo)
    assert weeks[4] not in landed(bike_repo)
    reason = manifest(bike_repo)["excluded"][weeks[4]]
    assert "row count 5 is below the minimum" in reason and "quarantined in" in reason
    kept = next((bike_repo / "data" / "quarantine").glob(f"{weeks[4]}-*"))
    assert len(pd.read_parquet(kept / "batch.parquet")) == 5  # kept for inspection, not deleted


def test_changed_source_settings_re_land_the_window_instead_of_mixing(bike_repo):
    run([PY, "-m", "stages.ingest"], bike_repo)
    before = landed(bike_repo)
    fingerprint = manifest(bike_repo)["fingerprint"]
    edit_params(bike_repo, source={"calendar": ["hour", "day_of_week"]})  # batches now carry fewer columns
    params = yaml.safe_load((bike_repo / "params.yaml").read_text())
    params["source"]["numeric_features"].remove("cal_month")
    (bike_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([PY, "-m", "stages.ingest"], bike_repo).stdout
    assert "source settings changed" in out
    archive = next((bike_repo / "data" / "archive").glob("source-change-*"))
    assert {p.stem for p in archive.glob("*.parquet")} == before  # the old batches are kept, not mixed in
    assert landed(bike_repo) == before and manifest(bike_repo)["fingerprint"] != fingerprint
    newest = pd.read_parquet(bike_repo / "data/raw" / f"{window(bike_repo)[-1]}.parquet")
    assert "cal_month" not in newest.columns and "cal_hour" in newest.columns


def test_a_key_naming_a_missing_column_fails_before_anything_runs(bike_repo):
    edit_params(bike_repo, policy={"cluster_column": "time_hour", "slice_columns": ["origin"]},
                evaluate={"slice_column": "weathersit"})
    p = run([PY, "-m", "stages.ingest"], bike_repo, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "'policy.cluster_column' names 'time_hour'" in p.stderr
    assert "'policy.slice_columns' names 'origin'" in p.stderr
    assert not landed(bike_repo) if (bike_repo / "data/raw").exists() else True
