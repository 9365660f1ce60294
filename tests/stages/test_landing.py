"""Nothing unvalidated reaches training: the `land` stage gates backfilled weeks, never lands a quarantined week,
leaves out stub weeks, re-lands the window when the source settings change, and checks every column-naming key
before anything runs. Real DVC-stage commands on UCI bike sharing, onboarded by `cli.init`."""
import json
import sys
from datetime import date
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


def test_a_person_accepts_a_quarantined_week_and_it_lands_and_teaches_the_contract(bike_repo):
    from stages.ingest import rejected_weeks

    weeks = window(bike_repo)
    run([PY, "-m", "stages.ingest"], bike_repo)
    raw = bike_repo / "data" / "raw"
    week = weeks[3]
    kept = bike_repo / "data" / "quarantine" / f"{week}-20260101T000000Z"  # as the weekly flow leaves a rejected week
    kept.mkdir(parents=True)
    (raw / f"{week}.parquet").replace(kept / "batch.parquet")
    (kept / "reasons.txt").write_text("'cnt': 1 rows (0.6%) outside [1 .. 977] (e.g. 1,100)\n")
    run([PY, "-m", "stages.ingest"], bike_repo)
    assert week not in landed(bike_repo) and "quarantined before" in manifest(bike_repo)["excluded"][week]
    assert date_of(week) in rejected_weeks(raw)

    out = run([PY, "-m", "cli.accept", week, "--note", "a busy week, not a broken feed"], bike_repo).stdout
    assert f"accepted the quarantined week {week}" in out and str(raw / f"{week}.parquet") in out
    assert pd.read_parquet(raw / f"{week}.parquet").equals(pd.read_parquet(kept / "batch.parquet"))
    assert week not in manifest(bike_repo)["excluded"] and date_of(week) not in rejected_weeks(raw)
    record = json.loads((kept / "accepted.json").read_text())
    assert record["note"] == "a busy week, not a broken feed" and record["by"]
    assert sorted(p.name for p in kept.iterdir()) == ["accepted.json", "batch.parquet", "reasons.txt"]  # kept
    run([PY, "-m", "stages.ingest"], bike_repo)  # the land stage no longer leaves the week out
    assert week in landed(bike_repo) and week not in manifest(bike_repo)["excluded"]

    again = run([PY, "-m", "cli.accept", week], bike_repo, check=False)
    assert again.returncode == 2 and "accepted already" in again.stderr
    none = run([PY, "-m", "cli.accept", weeks[1]], bike_repo, check=False)
    assert none.returncode == 2 and f"no quarantined or held batch for the week {weeks[1]}" in none.stderr


def date_of(week: str):
    from datetime import date

    return date.fromisoformat(week)


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


def test_a_week_whose_feature_feed_broke_lands_without_that_feature_and_is_quarantined(bike_repo):
    """A training week whose only fault is one feature's values (its humidity feed was empty that week) is quarantined
    as delivered, and lands without that feature: the window trains on its counts and sound features."""
    weeks = window(bike_repo)
    csv = bike_repo / "data" / "incoming" / "hour.csv"
    df = pd.read_csv(csv)
    t = pd.to_datetime(df["dteday"]) + pd.to_timedelta(df["hr"], unit="h")
    end = pd.Timestamp(weeks[4])
    df.loc[(t >= end - pd.Timedelta(days=7)) & (t < end), "hum"] = None
    df.to_csv(csv, index=False)
    out = run([PY, "-m", "stages.ingest"], bike_repo).stdout
    assert "landed WITHOUT 'hum'" in out, out
    landed_week = pd.read_parquet(bike_repo / "data" / "raw" / f"{weeks[4]}.parquet")
    assert landed_week["hum"].isna().all() and landed_week["cnt"].notna().all() and len(landed_week) > 100
    entry = manifest(bike_repo)["masked"][weeks[4]]
    assert entry["columns"] == ["hum"] and entry["reason"].startswith("failed the data contract ('hum' is null")
    assert weeks[4] not in manifest(bike_repo)["excluded"]
    kept = next((bike_repo / "data" / "quarantine").glob(f"{weeks[4]}-*"))
    assert len(pd.read_parquet(kept / "batch.parquet")) == len(landed_week)  # the week as delivered, kept
    others = [pd.read_parquet(bike_repo / "data" / "raw" / f"{w}.parquet") for w in weeks if w != weeks[4]]
    assert all(o["hum"].notna().all() for o in others)
    out = run([PY, "-m", "stages.prepare"], bike_repo).stdout  # the training set says what it does without
    assert "left out" not in out and "trains without 'hum'" in out, out


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


HELD_WEEK = date(2013, 6, 16)


def _landed_week(tmp_path, flights):
    """A raw store holding one real flights week, landed: (raw folder, the week, its batch)."""
    from ml.split import slice_week
    from stages.ingest import batch_path, write_manifest

    raw = tmp_path / "data" / "raw"
    batch = slice_week(flights, "time_hour", HELD_WEEK)
    raw.mkdir(parents=True)
    batch.to_parquet(batch_path(raw, HELD_WEEK))
    write_manifest(raw, {"excluded": {}})
    return raw, HELD_WEEK, batch


def test_a_held_week_is_accepted_back_into_the_training_windows(tmp_path, flights):
    from cli.accept import main as accept
    from stages.ingest import batch_path, held_path, held_weeks, hold_batch

    raw, week, _ = _landed_week(tmp_path, flights)
    hold_batch(raw, week, "'hour' no longer follows from the other columns", {"checks": {}})
    assert not batch_path(raw, week).exists() and week in held_weeks(raw)

    assert accept([week.isoformat(), "--project-dir", str(tmp_path)]) == 0
    assert pd.read_parquet(batch_path(raw, week)).equals(pd.read_parquet(held_path(raw, week)))  # both kept
    assert week not in held_weeks(raw)
    assert json.loads(held_path(raw, week).with_suffix(".accepted.json").read_text())["was"] == "held"
    assert accept([week.isoformat(), "--project-dir", str(tmp_path)]) == 2  # accepted already


def test_a_held_week_trains_without_its_broken_columns_until_accepted(tmp_path, flights):
    from cli.accept import main as accept
    from stages.ingest import batch_path, held_path, held_weeks, hold_batch, masked_weeks, read_manifest

    raw, week, batch = _landed_week(tmp_path, flights)
    hold_batch(raw, week, "'hour' no longer follows from the other columns", {"checks": {}}, without=("hour",))
    # the delivered batch is kept in data/held/; the raw store gets the week without its broken column
    assert pd.read_parquet(held_path(raw, week)).equals(batch)
    masked = pd.read_parquet(batch_path(raw, week))
    assert masked["hour"].isna().all() and masked.drop(columns="hour").equals(batch.drop(columns="hour"))
    assert week in held_weeks(raw) and masked_weeks(raw) == {week.isoformat(): ["hour"]}
    assert week.isoformat() not in read_manifest(raw)["excluded"]  # it is in the training windows

    # accepted: the week as delivered replaces the masked copy, which is archived
    assert accept([week.isoformat(), "--project-dir", str(tmp_path)]) == 0
    assert pd.read_parquet(batch_path(raw, week)).equals(batch)
    assert week not in held_weeks(raw) and masked_weeks(raw) == {}
    archived = list((tmp_path / "data" / "archive").rglob("*.parquet"))
    assert len(archived) == 1 and pd.read_parquet(archived[0])["hour"].isna().all()


def test_a_week_at_the_start_of_the_history_meets_quantile_rules_from_eight_weeks_before_it():
    """The range a quantile may take spans the weeks before's own quantiles: two weeks of daily S&P 500 returns
    (10 rows) spanned so little that an ordinary third week was quarantined on two columns. With fewer than
    MIN_QUANTILE_WEEKS weeks before it a backfilled week meets no quantile rule; the other learned rules (an empty
    feed) apply from two weeks. Bike sharing by day, onboarded as `cli.init` does: humidity x3 is caught by the
    fixed range alone with 7 weeks before it, by its quantiles as well with 8; an empty humidity feed is caught
    with 2; the ordinary weeks pass."""
    from datetime import timedelta

    from ml import profile as P
    from ml import render as R
    from ml import timeline as T
    from ml.config import parse_params
    from ml.contract import MIN_QUANTILE_WEEKS, accepted_history, learn_contract
    from ml.sources import load_source, read_table
    from ml.split import slice_week
    from stages.ingest import gate
    from tests.conftest import BIKE_CSV, ROOT

    day = BIKE_CSV.with_name("day.csv")
    prof = P.profile({day.name: read_table(day, None)}, path=str(day), target="cnt")
    params = parse_params(yaml.safe_load(R.render_params(prof, (ROOT / "params.yaml").read_text())))
    assert params.window.train_weeks > MIN_QUANTILE_WEEKS
    frame = load_source(params.source, ROOT)
    tcol = params.source.time_column
    first = T._monday_on_or_before(frame[tcol].min()).date() + timedelta(days=7)

    def failures(weeks_before: int, change) -> list[str]:
        as_of = first + timedelta(days=7 * weeks_before)
        before = [slice_week(frame, tcol, as_of - timedelta(days=7 * k)) for k in range(weeks_before, 0, -1)]
        learned = learn_contract(params.source, params.validation,
                                 accepted_history(frame, tcol, as_of, params.validation.learn_weeks), as_of,
                                 params.window.train_weeks)
        batch = slice_week(frame, tcol, as_of)
        return gate(params, batch.assign(hum=change(batch["hum"])), before, as_of, learned)[0]

    few, enough = MIN_QUANTILE_WEEKS - 1, MIN_QUANTILE_WEEKS
    assert failures(few, lambda h: h) == [] and failures(enough, lambda h: h) == []
    alone = failures(few, lambda h: h * 3)
    assert alone and all("outside [0 .. " in f for f in alone), alone  # the fixed range
    assert any("'hum' p25" in f for f in failures(enough, lambda h: h * 3))  # and the learned quantiles
    assert any("'hum' is null in every row" in f for f in failures(2, lambda h: h * float("nan")))
