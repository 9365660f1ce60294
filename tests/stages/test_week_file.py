"""The week a run is for lives in week.yaml beside params.yaml (run state), never in params.yaml (the user's)."""
import shutil
from datetime import date
from pathlib import Path

import pytest

from ml.config import ConfigError
from stages.common import load_params, load_stage_params, read_week, week_path, write_week

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def params_file(tmp_path) -> Path:
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    return p


def test_a_recorded_week_is_what_the_stages_read_and_params_yaml_is_untouched(params_file):
    before = params_file.read_text()
    assert read_week(params_file) is None  # no run yet: the stages read window.as_of
    assert load_stage_params(params_file).window.as_of == load_params(params_file).window.as_of
    assert write_week(params_file, "2013-07-14") is True
    assert write_week(params_file, date(2013, 7, 14)) is False  # already there: not rewritten
    assert read_week(params_file) == date(2013, 7, 14)
    stage = load_stage_params(params_file)
    assert stage.window.as_of == date(2013, 7, 14)
    assert stage.window.train_weeks == load_params(params_file).window.train_weeks
    assert params_file.read_text() == before
    assert not list(params_file.parent.glob("*.tmp"))  # written atomically


def test_a_broken_week_file_is_an_error_that_names_it(params_file):
    week_path(params_file).write_text('as_of: "the 14th"\n')
    with pytest.raises(ConfigError, match=r"week\.yaml.*as_of.*the 14th"):
        load_stage_params(params_file)


def test_the_week_file_is_git_ignored_and_an_output_of_the_land_stage():
    import subprocess

    import yaml

    ignored = subprocess.run(["git", "check-ignore", "-q", "week.yaml"], cwd=ROOT)
    assert ignored.returncode == 0
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert any(isinstance(o, dict) and "week.yaml" in o for o in stages["land"]["outs"])
    for name in ("prepare", "search", "train", "evaluate"):  # every stage that reads the week declares it
        assert {"week.yaml": ["as_of"]} in stages[name]["params"], name
