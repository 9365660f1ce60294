"""How `cli.init` finds the time in a user's files (`ml.timeline.find_time`)."""
from __future__ import annotations

import pandas as pd
import pytest

from ml.timeline import ProfileError, find_time


@pytest.mark.parametrize("texts", [
    ["2013-01-31", "2013-02-01"], ["2013/01/31", "2013/02/01"], ["1/31/2013", "2/1/2013"],
    ["Jan 31 2013", "Feb 1 2013"], ["January 31, 2013", "February 1, 2013"], ["31 Jan 2013", "1 Feb 2013"],
    ["2013-01-31T08:00:00-05:00", "2013-02-01T08:00:00-05:00"],
])
def test_dates_written_in_common_ways_are_found_without_time(texts):
    data = pd.DataFrame({"symbol": ["a", "b"], "when": texts, "price": [1.0, 2.0]})
    notes: list[str] = []
    assert find_time(data, None, notes) == ("when", {})
    assert "time column 'when' (the column of dates;" in notes[-1]  # found, not given


def test_text_that_is_not_a_date_is_not_taken_for_one():
    data = pd.DataFrame({"name": ["May 5 team", "June 6 team"], "code": ["12/ab/2013", "x"], "y": [1.0, 2.0]})
    with pytest.raises(ProfileError, match="no time column found: name it with --time"):
        find_time(data, None, [])
    notes: list[str] = []
    data["day"] = ["2013-01-31", "2013-02-01"]
    assert find_time(data, "day", notes)[0] == "day" and "(given;" in notes[-1]
