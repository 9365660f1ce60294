"""Real Prefect (test harness: temporary API + SQLite), real MLflow (SQLite file), real DVC in a temp git repo."""
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import edit_params, make_project, run


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # DVC stage commands
    with prefect_test_harness(server_startup_timeout=180):
        yield


def committed_project(dest: Path, **params) -> Path:
    """A project copy with one git commit (so runs carry a git sha), on a 4-week window for speed."""
    repo = make_project(dest)
    edit_params(repo, window={"as_of": "2013-05-05", "train_weeks": 4}, **params)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "project under test"], repo)
    return repo
