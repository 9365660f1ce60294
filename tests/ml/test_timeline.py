"""How `cli.init` finds the time in a user's files (`ml.timeline.find_time`)."""
from __future__ import annotations

import pandas as pd
import pytest

from ml.timeline import ProfileError, day_first, find_time


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


def test_dates_written_as_digits_are_dates_not_epoch_seconds():
    """statsmodels' weekly CO2 series writes 1958-03-29 as 19580329: read as an epoch, every row fell in five days
    of August 1970, without an error."""
    from ml.sources import parse_time

    co2 = pd.DataFrame({"date": [19580329, 19580405, 19580412], "co2": [316.1, 317.3, None]})
    notes: list[str] = []
    assert find_time(co2, None, notes)[0] == "date"  # found without --time
    assert list(parse_time(co2["date"], "co2.csv", "date").dt.strftime("%Y-%m-%d")) == [
        "1958-03-29", "1958-04-05", "1958-04-12"]
    stamps = pd.Series(["201301010600", "201301010700"])  # hourly station records, minutes included
    assert list(parse_time(stamps, "f", "t").dt.hour) == [6, 7]
    epochs = pd.Series([1357016400, 1357020000])  # ten digits stay epoch seconds
    assert list(parse_time(epochs, "f", "t").dt.year) == [2013, 2013]
    # eight-digit numbers that are not all dates are no time column
    counts = pd.DataFrame({"visits": [12345678, 19581399], "y": [1.0, 2.0]})
    with pytest.raises(ProfileError, match="no time column found"):
        find_time(counts, None, [])


def test_day_counts_read_as_epoch_seconds_stop_with_the_column_named():
    """river's Trump approval series numbers its days as Python's date ordinals (736389 = 2017-01-23); read as epoch
    seconds, 1,001 days were 17 minutes of 1970 and init said the files span one week. Which day count it is (an
    ordinal, a datenum a year apart, a spreadsheet serial) cannot be told from the numbers: the error names the
    column and asks for dates."""
    from ml.sources import SourceError, parse_time

    ordinals = pd.Series([736389, 736390, 737389])
    with pytest.raises(SourceError, match=r"t\.csv: column 'ordinal_date' holds numbers \(736389 \.\. 737389\).*"
                                          r"all fall in 1970.*write the column as dates"):
        parse_time(ordinals, "t.csv", "ordinal_date")


def test_text_that_is_not_a_date_is_not_taken_for_one():
    data = pd.DataFrame({"name": ["May 5 team", "June 6 team"], "code": ["12/ab/2013", "x"], "y": [1.0, 2.0]})
    with pytest.raises(ProfileError, match="no time column found: name it with --time"):
        find_time(data, None, [])
    notes: list[str] = []
    data["day"] = ["2013-01-31", "2013-02-01"]
    assert find_time(data, "day", notes)[0] == "day" and "(given;" in notes[-1]


def test_the_order_of_day_and_month_is_read_from_the_column_not_from_each_value():
    notes: list[str] = []
    assert day_first(pd.Series(["10/03/2004", "13/03/2004"], name="Date"), notes) and "day first" in notes[-1]
    assert not day_first(pd.Series(["03/10/2004", "03/13/2004"], name="Date"), notes)
    assert not day_first(pd.Series(["03/10/2004", "04/11/2004"], name="Date"), notes)
    assert "could be day or month first" in notes[-1]  # said, and read month first
    assert not day_first(pd.Series(["2004-03-10", "2004-03-13"]), [])


def test_a_station_file_with_dates_written_day_first_lands_on_the_right_days(tmp_path):
    """Beijing air with its date as 10/03/2013 (+ the hour column), as a European export writes it: pandas alone
    reads 10/03/2013 as October 3rd and 13/03/2013 as March 13th, without an error."""
    import yaml

    from cli.init import main as init
    from ml.config import parse_params
    from ml.sources import read_files
    from tests.conftest import SHARED

    original = pd.read_csv(sorted((SHARED / "datasets" / "beijing_air").glob("PRSA_Data_*.csv"))[0]).head(24 * 90)
    export = original.assign(Date=[f"{d:02d}/{m:02d}/{y}" for d, m, y in
                                   zip(original["day"], original["month"], original["year"], strict=True)])
    export = export.drop(columns=["No", "year", "month", "day"])
    (tmp_path / "in").mkdir()
    export.to_csv(tmp_path / "in" / "station.csv", index=False)
    params = tmp_path / "params.yaml"
    assert init(["--data", str(tmp_path / "in" / "station.csv"), "--target", "PM2.5", "--params",
                 str(params)]) == 0
    p = parse_params(yaml.safe_load(params.read_text()))
    assert p.source.dayfirst and p.source.time_parts == {"date": "Date", "hour": "hour"}
    got = read_files(str(tmp_path / "in" / "station.csv"), p.source)[p.source.time_column]
    want = pd.to_datetime(original[["year", "month", "day", "hour"]]).dt.tz_localize("UTC")
    assert (got.sort_values().to_numpy() == want.sort_values().to_numpy()).all()


@pytest.mark.parametrize("clock", ["{:02d}.00.00", "{}:00"])
def test_a_date_and_a_time_of_day_as_text_make_the_time(tmp_path, clock):
    """The layout of many sensor exports: `10/03/2004;18.00.00;2,6;...` (date day first, the time of day as text,
    fields split by ';', a decimal comma). Built from a Beijing station file; init composes the time from the two
    columns and every row lands on its hour."""
    import yaml

    from cli.init import main as init
    from ml.config import parse_params
    from ml.sources import read_files
    from tests.conftest import SHARED

    original = pd.read_csv(sorted((SHARED / "datasets" / "beijing_air").glob("PRSA_Data_*.csv"))[1]).head(24 * 90)
    export = original.assign(
        Date=[f"{d:02d}/{m:02d}/{y}" for d, m, y in zip(original["day"], original["month"], original["year"],
                                                        strict=True)],
        Time=[clock.format(h) for h in original["hour"]]).drop(columns=["No", "year", "month", "day", "hour"])
    (tmp_path / "in").mkdir()
    export.to_csv(tmp_path / "in" / "station.csv", index=False, sep=";", decimal=",")
    params = tmp_path / "params.yaml"
    assert init(["--data", str(tmp_path / "in" / "station.csv"), "--target", "PM2.5", "--params",
                 str(params)]) == 0
    p = parse_params(yaml.safe_load(params.read_text()))
    assert p.source.time_parts == {"date": "Date", "clock": "Time"} and p.source.dayfirst
    assert p.source.time_column == "event_time"  # not "time": GX took the column "Time" for it
    assert "Time" not in p.source.features and p.source.calendar[0] == "hour"
    got = read_files(str(tmp_path / "in" / "station.csv"), p.source)[p.source.time_column]
    want = pd.to_datetime(original[["year", "month", "day", "hour"]]).dt.tz_localize("UTC")
    assert (got.sort_values().to_numpy() == want.sort_values().to_numpy()).all()


def test_a_time_of_day_that_is_not_one_is_named_with_its_file_and_column():
    from ml.sources import SourceError, compose_time

    rows = pd.DataFrame({"Date": ["10/03/2004", "10/03/2004"], "Time": ["18.00.00", "24.00.00"]})
    with pytest.raises(SourceError, match=r"week.csv: column 'Time' \(source.time_parts.clock\) has 1 value\(s\) "
                                          r"that are not a time of day, e.g. '24.00.00'"):
        compose_time(rows, {"date": "Date", "clock": "Time"}, "week.csv", dayfirst=True)


def test_a_time_of_day_with_and_without_seconds_in_one_column():
    from ml.sources import clock_time

    got = clock_time(pd.Series(["17:24", "17:24:30", "08.05.00"]), "week.csv: column 'Time'")
    assert list(got.total_seconds()) == [62640, 62670, 29100]
