"""`make demo`'s program (cli.replay) on real weeks, in a workspace of its own: the weeks decide, the corrupted
batch is quarantined with its reasons, and the checkout it started from is left as it was."""
import subprocess

import pytest
import yaml

from tests.conftest import ROOT


def git_status(repo) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def demo(prefect_api, tmp_path_factory):
    from contextlib import redirect_stdout
    from io import StringIO

    from cli.replay import main

    workspace = tmp_path_factory.mktemp("demo") / "workspace"
    before = git_status(ROOT)
    out = StringIO()
    with redirect_stdout(out):
        code = main(["--weeks", "2", "--ab-weeks", "0", "--workspace", str(workspace)])
    return {"code": code, "printed": out.getvalue(), "workspace": workspace, "status_before": before,
            "status_after": git_status(ROOT), "week": (workspace / "week.yaml").read_text()}


def test_the_demo_decides_each_week_and_quarantines_the_corrupted_batch(demo):
    printed = demo["printed"]
    assert demo["code"] == 0, printed
    decisions = printed.split("Weekly decisions")[1]
    assert "2013-06-02  promote  promote (first champion)" in decisions, decisions
    assert "2013-06-09  " in decisions
    assert "2013-06-16  failed   corrupted batch" in decisions
    assert "column 'dep_delay' is missing (the batch has 'dep_delay_min' instead?)" in decisions
    assert list((demo["workspace"] / "data" / "quarantine").glob("2013-06-16-*"))


def test_the_demo_runs_in_its_workspace_and_leaves_the_checkout_as_it_was(demo):
    ws = demo["workspace"]
    assert demo["status_after"] == demo["status_before"]
    assert (ws / "mlflow.db").exists() and (ws / "dvc.lock").exists()
    assert yaml.safe_load(demo["week"])["as_of"] == "2013-06-09"  # the last week trained
    assert (ws / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    log = subprocess.run(["git", "log", "--oneline"], cwd=ws, capture_output=True, text=True).stdout
    assert "the pipeline as of this demo" in log


def test_a_second_demo_starts_afresh_and_decides_as_the_first(demo, tmp_path):
    """The second call must not compare its first week against the champion the first call left (trained on later
    weeks): it prints the same first decision. A folder the demo did not make is never cleared."""
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    from cli.replay import main

    out = StringIO()
    with redirect_stdout(out):
        code = main(["--weeks", "1", "--no-corrupt", "--ab-weeks", "0", "--workspace", str(demo["workspace"])])
    def first_week(printed: str) -> list[str]:
        return [line for line in printed.split("Weekly decisions")[1].splitlines() if line.startswith("2013-06-02")]

    first, again = first_week(demo["printed"]), first_week(out.getvalue())
    assert code == 0 and again == first, out.getvalue()
    assert not list((demo["workspace"] / "data" / "quarantine").glob("2013-06-16-*"))  # the earlier run's is gone

    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    err = StringIO()
    with redirect_stderr(err):
        assert main(["--weeks", "1", "--workspace", str(mine)]) == 2
    assert "is not a demo workspace" in err.getvalue() and (mine / "notes.txt").read_text() == "keep me"
