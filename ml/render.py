"""params.yaml for a profile (`ml.profile`): the chosen sections, each key commented, the rest from the project's
own params.yaml. Pure: a Profile and the template text in, the text out (`python -m cli.init` writes it)."""
from __future__ import annotations

from datetime import date

from ml.budget import FALSE_ALARM_RATE
from ml.config import ValidationConfig
from ml.first_contract import QUANTILE_TOLERANCE, RANGE_TOLERANCE
from ml.profile import Profile

NULL_TOLERANCE = ValidationConfig().null_tolerance


def _y(value) -> str:
    """A value in YAML flow style on one line."""
    import yaml

    if isinstance(value, date):
        return f'"{value.isoformat()}"'
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip().removesuffix("\n...")


def render_params(p: Profile, template: str) -> str:
    """params.yaml for the profile: the chosen sections, each key commented, and the other sections (train,
    drift, ab) as in `template` (the project's own params.yaml), so every step keeps its documented defaults."""
    m = p.summary
    head = (f"# Written by `python -m cli.init` from {p.source['path']}\n# ({m['rows']:,} rows in {m['files']} "
            f"file(s), {m['first']:%Y-%m-%d} .. {m['last']:%Y-%m-%d}, {m['weeks']} weeks of "
            f"~{m['weekly_rows']:,} rows).\n"
            "# One section per pipeline step. `dvc repro` reruns exactly the stages whose keys changed. "
            "Edit freely.\n\n")
    tail = _template_sections(template, ("train", "search", "drift"))
    policy = _template_sections(template, ("policy",))
    policy = _set_line(policy, "cluster_column", _y(p.policy["cluster_column"]),
                       "resampling unit of the bootstrap (null: day-long time blocks, block_hours)")
    policy = _set_line(policy, "slice_columns", _y(p.policy["slice_columns"]), "guardrails: no slice much worse")
    registry = f"""registry:
  model_name: {_y(p.registry['model_name'])}
  experiment: weekly-retrain

"""
    ab = _template_sections(template, ("ab",))
    return head + _commented(_chosen_sections(p)) + tail + policy + registry + ab


def _commented(sections: dict) -> str:
    """Sections of (key, value, note) as YAML, each key with its comment (a long value's on the line above)."""
    text = ""
    for name, (comment, keys) in sections.items():
        text += f"{name + ':':<28} # {comment}\n"
        for key, value, note in keys:
            line = f"  {key}: {_y(value)}"
            if note and len(line) > 40:
                text += f"  # {note}\n{line}\n"
            else:
                text += (f"{line:<28} # {note}" if note else line).rstrip() + "\n"  # a space before '#' always
        text += "\n"
    return text


def _chosen_sections(p: Profile) -> dict[str, tuple[str, list[tuple]]]:
    """The sections `cli.init` chooses from the data: {name: (comment, [(key, value, note)])}."""
    s, w, v = p.source, p.window, p.validation
    where = "relative to this file" if not str(s["path"]).startswith("/") else "absolute path"
    sections = {
        "source": ("where weekly batches come from (read by land and prepare)", [
            ("kind", "files", "a folder or glob of CSV/Parquet files"),
            ("path", s["path"], where),
            ("time_column", s["time_column"], "composed from time_parts" if s["time_parts"] else "UTC weeks"),
            ("time_parts", s["time_parts"], "columns holding the parts of the time (null: time_column is one)"),
            ("timezone", s["timezone"], "zone of naive times in the files; batches are UTC weeks"),
            ("dayfirst", s["dayfirst"], "dates written day first (31/01/2013); false: month first or ISO"),
            ("na_values", s["na_values"], "CSV text read as missing (null: pandas' defaults)"),
            ("target", s["target"], "what the model predicts"),
            ("label", s["label"], "{column, above}: target = 1 where column > above (null: a column)"),
            ("task", s["task"], "regression | classification"),
            ("unit_id", s["unit_id"], "identifies one row (duplicate check, A/B routing)"),
            ("unit_id_from", s["unit_id_from"], "unit_id joined from these columns (null: unit_id is a column)"),
            ("calendar", s["calendar"], "derived numeric features cal_<name> from the time, in `timezone`"),
            ("numeric_features", s["numeric_features"], None),
            ("categorical_features", s["categorical_features"], None),
            ("drop", s["drop"], "never features (identifiers, constants, leaks of the target)")]),
        "window": ("read by land and prepare", [
            ("as_of", w["as_of"], "the first week (its 7 days before this date); each run's week is in week.yaml"),
            ("train_weeks", w["train_weeks"], "training window = the weeks before the newest one")]),
        "evaluate": ("read by evaluate", [
            ("slice_column", p.evaluate["slice_column"], "error-by-slice plot"),
            ("plot_rows", 2000, None)]),
        "validation": ("the data contract of a new batch (Great Expectations), learned from the history", [
            ("min_rows", v["min_rows"], "floor of rows in a week (shorter weeks are left out of training)"),
            ("row_count_tolerance", v["row_count_tolerance"], "learned: rows within the reference weeks' "
             f"[min x {1 - v['row_count_tolerance']:g}, max x {1 + v['row_count_tolerance']:g}]"),
            ("required", v["required"], "never null (time and unit id always)"),
            ("null_tolerance", v["null_tolerance"], "learned: other columns' null share <= reference share + "
             f"{v['null_tolerance'] * 100:g} points" + (" (the history's record rise of a column's nulls)"
                                                        if v["null_tolerance"] > NULL_TOLERANCE else "")),
            ("null_exempt", v["null_exempt"], "null share too variable week to week for that check"),
            ("ranges", v["ranges"], "[min, max] from the history's robust spread; widened each week to the "
             "accepted weeks' own (learn_ranges), never narrowed; >= 0 stays >= 0"),
            ("range_tolerance", RANGE_TOLERANCE, "share of rows that may pass a range's bound other than 0 (a "
             "reading past the record; a bound at 0 stays strict)"),
            ("category_tolerance", 0.02, "learned: <= 2% of rows outside the reference's categories"),
            ("categories", {}, "values a category column may take besides its reference's: {column: [values]} "
             "(each week's contract adds those of the accepted weeks)"),
            ("quantiles", [0.25, 0.5, 0.75], None),
            ("quantile_tolerance", QUANTILE_TOLERANCE, "learned: within the reference weeks' range +- this x IQR"),
            ("companions", True, "a week whose quantiles moved with the other columns (a linear prediction "
             "from them) passes: an episode, not a break of one column"),
            ("tail_room", "none", "learned bounds that reach past the accepted weeks' extremes to where their "
             "tail puts the next one: ranges, all (also quantile and row tolerances): fewer false quarantines, "
             "fewer breaks caught"),
            ("quantile_exempt", v["quantile_exempt"], "no learned quantile rule: too variable "
             "week to week (drift), or moving with the clock"),
            ("column_tolerances", v["column_tolerances"], "wider per column, to the history's own week-to-week "
             f"variation: the learned rules together reject <= {FALSE_ALARM_RATE:.0%} of its weeks"),
            ("pinned", {}, "tolerances a person fixed, used exactly: {column: {quantiles: 2.0}}"),
            ("learn_weeks", 52, "value rules (ranges, tolerances) follow the accepted weeks of the last year"),
            ("false_alarm_rate", FALSE_ALARM_RATE, "... calibrated to reject at most this share of them"),
            ("learn_ranges", True, "ranges widen to the accepted weeks' extremes +- 1/4 of their spread")]),
    }
    return sections


def _template_sections(template: str, names: tuple[str, ...]) -> str:
    """The text of top-level sections `names` of a params.yaml, comments included."""
    out, keep = [], False
    for line in template.splitlines(keepends=True):
        if line and not line[0].isspace() and not line.startswith("#"):
            keep = line.split(":", 1)[0] in names
        if keep:
            out.append(line)
    text = "".join(out)
    return text if text.endswith("\n\n") else text.rstrip("\n") + "\n\n"


def _set_line(section: str, key: str, value: str, comment: str) -> str:
    lines = section.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{key}:"):
            indent = line[:len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{key}: {value}   # {comment}\n"
            break
    return "".join(lines)
