"""`dvc repro` on real data in a real temp git repo: metrics, no-op reruns, minimal reruns, bad input."""
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import edit_params, make_project, run

PY = sys.executable


@pytest.fixture(scope="module")
def landed_template(tmp_path_factory) -> Path:
    """A flights project whose default window `python -m stages.ingest` has landed (once per module)."""
    repo = make_project(tmp_path_factory.mktemp("landed") / "repo")
    run([PY, "-m", "stages.ingest"], repo)
    return repo


@pytest.fixture
def landed_repo(landed_template: Path, tmp_path: Path) -> Path:
    """A copy of `landed_template` of this test's own (git repo, DVC and landed batches)."""
    return Path(shutil.copytree(landed_template, tmp_path / "repo", symlinks=True))


def ingest_and_repro(repo: Path):
    run([PY, "-m", "stages.ingest"], repo)
    return run(["dvc", "repro"], repo)


def ran_stages(out: str) -> list[str]:
    return [s for s in ("land", "prepare", "train", "evaluate") if f"Running stage '{s}'" in out]


def leftovers(repo: Path) -> list[Path]:
    """Temp files an interrupted atomic write would leave behind."""
    return [p for p in (repo / "data").rglob("*.tmp")]


def test_repro_on_flights_beats_the_baseline_then_is_a_noop(flights_repo):
    first = ingest_and_repro(flights_repo)
    assert ran_stages(first.stdout) == ["land", "prepare", "train", "evaluate"]
    metrics = json.loads((flights_repo / "data/eval/metrics.json").read_text())
    assert metrics["model"]["rows"] > 5000
    assert metrics["model"]["mae"] < 0.75 * metrics["baseline"]["mae"], metrics
    for plot in ("predicted_vs_actual.csv", "error_by_slice.csv"):
        assert (flights_repo / "data/eval/plots" / plot).stat().st_size > 0
    assert (flights_repo / "data/eval/predictions.parquet").exists()
    assert "mae" in run(["dvc", "metrics", "show"], flights_repo).stdout

    again = run(["dvc", "repro"], flights_repo)
    assert ran_stages(again.stdout) == []
    assert "up to date" in again.stdout

    edit_params(flights_repo, train={"hgb": {"loss": "absolute_error", "max_iter": 120, "learning_rate": 0.1,
                                             "max_leaf_nodes": 31, "min_samples_leaf": 20,
                                             "l2_regularization": 0.0}})
    changed = run(["dvc", "repro"], flights_repo)
    assert ran_stages(changed.stdout) == ["train", "evaluate"]
    assert leftovers(flights_repo) == []


def test_the_refit_is_the_same_window_moved_on_to_end_with_the_holdout_week(landed_repo):
    import pandas as pd

    from stages.common import load_params

    flights_repo = landed_repo
    run(["dvc", "repro"], flights_repo)
    params = load_params(flights_repo / "params.yaml")
    t = params.source.time_column
    train = pd.read_parquet(flights_repo / "data/prepared/train.parquet")
    holdout = pd.read_parquet(flights_repo / "data/prepared/holdout.parquet")
    oldest_week_end = pd.Timestamp(params.window.as_of, tz="UTC") - pd.Timedelta(days=7 * params.window.train_weeks)
    kept = int((train[t] >= oldest_week_end).sum())
    assert 0 < kept < len(train)  # the oldest week is left out ...
    info = json.loads((flights_repo / "data/refit/info.json").read_text())
    assert info["train_rows"] == kept + len(holdout)  # ... and the holdout week is in
    assert (flights_repo / "data/refit/model.pkl").stat().st_size > 0


@pytest.mark.parametrize("section,values,named", [
    ("train", {"famly": "hgb"}, "train.famly"),
    ("source", {"target": "arrival_delay"}, "arrival_delay"),
    ("window", {"as_of": "2013-13-40"}, "window.as_of"),
])
def test_bad_params_fail_with_the_key_named_and_nothing_half_written(landed_repo, section, values, named):
    flights_repo = landed_repo
    edit_params(flights_repo, **{section: values})
    p = run(["dvc", "repro"], flights_repo, check=False)
    assert p.returncode != 0
    assert named in p.stderr + p.stdout
    assert not (flights_repo / "data/prepared/train.parquet").exists()
    assert leftovers(flights_repo) == []


def test_week_outside_the_data_is_a_clear_error(flights_repo):
    edit_params(flights_repo, window={"as_of": "2014-03-02"})
    p = run([PY, "-m", "stages.ingest"], flights_repo, check=False)
    assert p.returncode == 2
    assert "no rows for the week 2014-02-23..2014-03-01" in p.stderr
    assert "Traceback" not in p.stderr
    assert not list((flights_repo / "data").glob("raw/*.parquet"))  # no week landed


def test_repro_in_a_fresh_clone_lands_the_window_itself(flights_repo):
    p = run(["dvc", "repro"], flights_repo)
    assert "Running stage 'land'" in p.stdout
    assert len(list((flights_repo / "data/raw").glob("*.parquet"))) == 9
    assert (flights_repo / "data/eval/metrics.json").exists()


def test_missing_batch_names_the_file_and_the_fix(landed_repo):
    flights_repo = landed_repo
    victim = sorted((flights_repo / "data/raw").glob("*.parquet"))[2]
    victim.unlink()
    p = run([PY, "-m", "stages.prepare"], flights_repo, check=False)
    assert p.returncode == 2
    assert victim.name in p.stderr and "python -m stages.ingest" in p.stderr


def test_corrupt_batch_missing_a_column_names_file_and_column(landed_repo):
    import pandas as pd

    flights_repo = landed_repo
    victim = sorted((flights_repo / "data/raw").glob("*.parquet"))[0]
    pd.read_parquet(victim).drop(columns=["visib"]).to_parquet(victim)
    p = run(["dvc", "repro"], flights_repo, check=False)
    assert p.returncode != 0
    assert victim.name in p.stderr and "'visib'" in p.stderr
