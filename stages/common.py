"""IO shared by the stages: params loading, atomic writes, and one clear error line on bad input."""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from ml.config import ConfigError, Params, parse_params
from ml.sources import SourceError
from ml.split import EmptyWeekError

PROJECT = Path(__file__).resolve().parents[1]  # the project's root (the default --project-dir)
USER_ERRORS = (ConfigError, SourceError, EmptyWeekError, FileNotFoundError)


# mlflow.set_tracking_uri() also writes MLFLOW_TRACKING_URI into os.environ (MLflow 3), so a value found there may
# be one this process set for an earlier project; only the user's own setting is honoured.
_DERIVED: set[str] = set()


def tracking_uri(project: Path) -> str:
    """MLFLOW_TRACKING_URI when the user set it (e.g. a server), else a SQLite store in the project."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env not in _DERIVED:
        return env
    return f"sqlite:///{(project / 'mlflow.db').resolve()}"


def quiet_libraries() -> None:
    """One line per step is ours to write: library INFO chatter (registry, GX docs sites) stays out of flow logs."""
    for name in ("mlflow", "great_expectations", "dvc", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Parse params.yaml into typed sections; a YAML or key error names the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        return parse_params(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


WEEK_FILE = "week.yaml"  # beside params.yaml: the week the last run was for (run state, git-ignored)
_WEEK_HEADER = ("# The week the last run was for: run state, not configuration. Written by the weekly flow (and by\n"
                "# `dvc repro`'s land stage from window.as_of in params.yaml when missing); git-ignored. Edit it, or\n"
                "# run `python -m flows.weekly_retrain --as-of ...`, to train another week.\n")


def week_path(params_path: str | Path) -> Path:
    return Path(params_path).parent / WEEK_FILE


def read_week(params_path: str | Path) -> date | None:
    """The week of the last run (week.yaml beside params.yaml), or None when no run has set one."""
    path = week_path(params_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    value = raw.get("as_of") if isinstance(raw, dict) else None
    try:
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{path}: 'as_of' must be a date like 2013-06-02, got {value!r} (delete the file to "
                          f"start from window.as_of in params.yaml)") from None


def write_week(params_path: str | Path, as_of: date | str) -> bool:
    """Record the week a run is for in week.yaml (atomically); False when it already says so."""
    week = date.fromisoformat(str(as_of))
    if read_week(params_path) == week:
        return False
    atomic_write(week_path(params_path), lambda t: t.write_text(f'{_WEEK_HEADER}as_of: "{week.isoformat()}"\n'))
    return True


def load_stage_params(path: str | Path = "params.yaml") -> Params:
    """params.yaml as a DVC stage reads it: window.as_of is the run's week (week.yaml) once a run has set one."""
    params = load_params(path)
    week = read_week(path)
    if week is None or week == params.window.as_of:
        return params
    return dataclasses.replace(params, window=dataclasses.replace(params.window, as_of=week))


def copy_pipeline(source: Path, dest: Path, names) -> None:
    """Copy `names` (folders and files of the project `source`, those that exist) into `dest`, over what is there:
    a project of its own (the demo's workspace, a test's repository)."""
    import shutil

    for name in names:
        src, out = source / name, dest / name
        if src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp) on a temp file beside `path`, then rename it into place (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda t: t.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n"))


def write_parquet(path: str | Path, df) -> Path:
    return atomic_write(path, lambda t: df.to_parquet(t, index=False))


def write_csv(path: str | Path, df) -> Path:
    return atomic_write(path, lambda t: df.to_csv(t, index=False))


def write_pickle(path: str | Path, obj: Any) -> Path:
    import joblib

    return atomic_write(path, lambda t: joblib.dump(obj, t))


def _jsonable(o: Any):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cli(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a stage main: a user error prints one line naming the culprit and exits 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def fmt_int(n: int) -> str:
    return f"{n:,}"
