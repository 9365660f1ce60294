"""A corpus of corrupted weeks against the gate, on data the project was not tuned on (Beijing air quality,
onboarded by `cli.init`): every breaking batch is rejected with a worded reason, quarantined byte for byte,
and neither @champion nor @challenger moves; benign changes (an extra column, reordered columns or rows) pass."""
from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import BEIJING, init_project, make_project, run


def _inf(df):
    df.loc[df.index[:5], "RAIN"] = np.inf
    return df


def _null_station(df):
    df.loc[df.index[:10], "station"] = None
    return df


def _fahrenheit(df):
    df["TEMP"] = df["TEMP"] * 9 / 5 + 32
    return df


def _text_in_numbers(df):
    df["PRES"] = df["PRES"].astype(object)
    df.loc[df.index[::3], "PRES"] = "n/a hPa"
    return df


def _bad_hour(df):
    df["hour"] = df["hour"].astype(object)
    df.loc[df.index[:3], "hour"] = "noon"
    return df


# (name, corruption of the week's delivered rows, words the reason must contain, the features the week trains
# without from the next run on: only a feature's values broke; () the whole week stays out)
BREAKING = [
    ("a column is missing", lambda d: d.drop(columns=["TEMP"]), "'TEMP' is missing", ()),
    ("a column is renamed", lambda d: d.rename(columns={"PM10": "pm10"}), "the batch has 'pm10' instead?", ()),
    ("+inf in a numeric column", _inf, "'RAIN'", ("RAIN",)),
    ("nulls in a never-null column", _null_station, "'station' is null in 10 rows", ()),
    ("a feed is empty for the week", lambda d: d.assign(O3=np.nan), "'O3' is null in every row", ("O3",)),
    ("the target shifted", lambda d: d.assign(**{"PM2.5": d["PM2.5"] + 300}), "target 'PM2.5' median", ()),
    ("temperature in Fahrenheit", _fahrenheit, "'TEMP'", ("TEMP",)),
    ("duplicated rows", lambda d: pd.concat([d, d.head(200)]), "'unit_id' is duplicated", ()),
    ("the wrong week", lambda d: d.assign(year=d["year"] + 1), "'time'", ()),
    ("a handful of rows", lambda d: d.head(100), "row count 100", ()),
    ("unknown categories", lambda d: d.assign(wd="north-ish"), "'wd'", ("wd",)),
    ("text in a numeric column", _text_in_numbers, "'PRES' is not numeric", ()),
    ("a sign flip", lambda d: d.assign(WSPM=-d["WSPM"] - 1), "'WSPM'", ("WSPM",)),
    ("only the header", lambda d: d.head(0), "row count 0", ()),
    ("an unparseable time", _bad_hour, "'hour'", ()),
]
# four of the twelve stations: the same files, columns and faults at a third of the onboarding cost
STATIONS = "PRSA_Data_[A-D]*.csv"
BENIGN = [
    ("an extra column", lambda d: d.assign(sensor_firmware="v2")),
    ("reordered columns", lambda d: d[list(reversed(d.columns))]),
    ("shuffled rows", lambda d: d.sample(frac=1.0, random_state=1)),
]


@pytest.fixture(scope="module")
def corpus(prefect_api, tmp_path_factory):
    from flows.weekly_retrain import weekly_retrain

    repo = make_project(tmp_path_factory.mktemp("corpus") / "repo")
    init_project(repo, "--data", str(BEIJING / STATIONS), "--target", "PM2.5", "--timezone", "Asia/Shanghai")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "onboarded"], repo)
    run(["dvc", "repro"], repo)
    first = weekly_retrain(project_dir=str(repo), return_state=True)
    assert first.is_completed(), first.message
    as_of = date.fromisoformat(first.result()["week"]) + timedelta(days=7)
    return {"repo": repo, "as_of": as_of, "week": delivered_rows(repo, as_of),
            "model": yaml.safe_load((repo / "params.yaml").read_text())["registry"]["model_name"]}


def delivered_rows(repo: Path, as_of: date) -> pd.DataFrame:
    """The rows of one week exactly as the station files deliver them (no derived columns)."""
    frames = []
    for f in sorted(BEIJING.glob(STATIONS)):
        df = pd.read_csv(f)
        local = pd.to_datetime(df[["year", "month", "day", "hour"]]).dt.tz_localize("Asia/Shanghai")
        utc = local.dt.tz_convert("UTC")
        end = pd.Timestamp(as_of, tz="UTC")
        frames.append(df[(utc >= end - pd.Timedelta(days=7)) & (utc < end)])
    return pd.concat(frames, ignore_index=True)


def aliases(repo: Path, model: str) -> dict:
    from mlflow import MlflowClient

    return dict(MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}").get_registered_model(model).aliases)


def submit(corpus: dict, name: str, frame: pd.DataFrame | None = None, raw: bytes | None = None,
           dry_run: bool = False):
    from flows.weekly_retrain import weekly_retrain

    repo = corpus["repo"]
    slug = name.replace(" ", "-").replace("+", "plus")
    if raw is not None:
        path = repo / "incoming" / f"{slug}.parquet"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(raw)
    else:
        path = repo / "incoming" / f"{slug}.csv"
        path.parent.mkdir(exist_ok=True)
        frame.to_csv(path, index=False)
    quarantine = repo / "data" / "quarantine"
    before = set(quarantine.iterdir()) if quarantine.exists() else set()
    state = weekly_retrain(as_of=corpus["as_of"].isoformat(), source=str(path), dry_run=dry_run,
                           project_dir=str(repo), return_state=True)
    new = sorted(set(quarantine.iterdir()) - before) if quarantine.exists() else []
    return state, path, new


@pytest.mark.parametrize("name,corrupt,words,without", BREAKING, ids=[b[0] for b in BREAKING])
def test_breaking_batch_is_rejected_quarantined_and_moves_nothing(corpus, name, corrupt, words, without):
    repo = corpus["repo"]
    before = aliases(repo, corpus["model"])
    raw = repo / "data" / "raw" / f"{corpus['as_of']}.parquet"
    landed_before = raw.read_bytes() if raw.exists() else None
    state, path, new = submit(corpus, name, corrupt(corpus["week"].copy()))
    assert state.is_failed(), f"{name}: passed the gate"
    assert words in state.message, f"{name}: {state.message}"
    assert len(new) == 1, new
    assert (new[0] / path.name).read_bytes() == path.read_bytes()  # the delivered file, byte for byte
    assert (new[0] / "reasons.txt").read_text().strip()
    assert aliases(repo, corpus["model"]) == before  # @champion and @challenger untouched
    if without:  # later weeks train on the week, never on its broken values
        landed = pd.read_parquet(raw)
        assert len(landed) == len(pd.read_parquet(new[0] / "batch.parquet"))
        assert all(landed[c].isna().all() for c in without), f"{name}: {without} landed"
        manifest = json.loads((repo / "data" / "raw" / "_landed.json").read_text())
        assert manifest["masked"][str(corpus["as_of"])]["columns"] == list(without)
        assert f"trains from the next run on without {', '.join(map(repr, without))}" in state.message
    else:
        assert (raw.read_bytes() if raw.exists() else None) == landed_before  # nothing landed
        assert "trains from the next run on" not in state.message, f"{name}: {state.message}"
    _record(name, "blocked", state.message)


def test_unreadable_file_is_quarantined_byte_for_byte(corpus):
    repo = corpus["repo"]
    before = aliases(repo, corpus["model"])
    junk = b"PAR1" + bytes(range(256)) * 4  # a truncated, corrupt parquet file
    state, path, new = submit(corpus, "an unreadable file", raw=junk)
    assert state.is_failed()
    assert "cannot be read as PARQUET" in state.message and path.name in state.message
    assert len(new) == 1 and (new[0] / path.name).read_bytes() == junk
    assert aliases(repo, corpus["model"]) == before
    _record("an unreadable file", "blocked", state.message)


@pytest.mark.parametrize("name,change", BENIGN, ids=[b[0] for b in BENIGN])
def test_benign_changes_pass(corpus, name, change):
    state, _, new = submit(corpus, name, change(corpus["week"].copy()), dry_run=True)
    assert state.is_completed(), f"{name}: {state.message}"
    assert new == []
    _record(name, "passed", state.result()["summary"])


def _record(name: str, outcome: str, message: str) -> None:
    from tests.conftest import ROOT

    out = ROOT / "tests" / "out" / "gate_corpus.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = json.loads(out.read_text()) if out.exists() else {}
    seen[name] = {"outcome": outcome, "message": message.splitlines()[:6]}
    out.write_text(json.dumps(seen, indent=2))
