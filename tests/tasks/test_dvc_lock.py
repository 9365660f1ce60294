"""A run killed while DVC writes its lock registry does not stop the runs after it: the unreadable file is set
aside (kept), and DVC runs again. Real git and DVC in a temp repo."""
import subprocess
import sys

from tasks.training import mend_rwlock

PY = sys.executable


def dvc(args, cwd, check=True):
    return subprocess.run([PY, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, check=check)


def test_an_unreadable_dvc_lock_registry_is_set_aside_and_dvc_runs_again(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(["init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")
    assert mend_rwlock(tmp_path) is None  # nothing to mend
    registry = tmp_path / ".dvc" / "tmp" / "rwlock"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text("")  # what a kill between DVC's truncate and its write leaves
    failed = dvc(["repro"], tmp_path, check=False)
    assert failed.returncode != 0 and "rwlock" in (failed.stdout + failed.stderr).lower()
    aside = mend_rwlock(tmp_path)
    assert aside is not None and aside.exists() and aside.read_text() == "" and not registry.exists()
    dvc(["repro"], tmp_path)
    assert (tmp_path / "out.txt").read_text().strip() == "hi"
    assert mend_rwlock(tmp_path) is None  # DVC's own file again, readable: left alone
