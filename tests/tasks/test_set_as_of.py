"""The weekly flow writes the week into params.yaml: exactly one value changes, comments and layout stay."""
import shutil
from pathlib import Path

import pytest
import yaml

from tasks.training import set_as_of

ROOT = Path(__file__).resolve().parents[2]


def test_only_the_as_of_value_changes(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    before = p.read_text().splitlines()
    assert set_as_of(p, "2013-07-14") is True
    after = p.read_text().splitlines()
    # strict=False: a changed line count is reported by the length assert below, not as a zip error
    changed = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
    assert len(before) == len(after) and len(changed) == 1
    assert '"2013-07-14"' in changed[0][1] and "#" in changed[0][1]  # the comment survives
    assert yaml.safe_load(p.read_text())["window"]["as_of"] == "2013-07-14"
    assert set_as_of(p, "2013-07-14") is False  # already there: the file is not rewritten


def test_as_of_outside_window_section_is_not_touched(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("other:\n  as_of: keep\nwindow:\n  train_weeks: 8\n  as_of: 2013-06-02   # week\n")
    set_as_of(p, "2013-06-09")
    assert p.read_text() == 'other:\n  as_of: keep\nwindow:\n  train_weeks: 8\n  as_of: "2013-06-09"   # week\n'


def test_missing_as_of_line_is_an_error(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("window: {as_of: 2013-06-02}\n")
    with pytest.raises(ValueError, match="as_of"):
        set_as_of(p, "2013-06-09")
