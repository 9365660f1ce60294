"""Run a flow from the command line: log lines without tracebacks on the console, every record with its traceback
in data/logs/<flow>.log, and on failure one short block saying why, where the full log is and where the UI is.

    return run_flow(weekly_retrain, args.project_dir, lambda r: f"week {r['week']}: {r['summary']}", as_of=...)
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"


def run_flow(flow, project_dir: str | Path, done: Callable[[Any], str], **params: Any) -> int:
    """Run flow(**params) in project_dir; print done(result) and return 0, or print why it did not and return 1."""
    project = Path(project_dir).resolve()
    if not project.is_dir():
        print(f"{flow.name}: --project-dir {project} is not a directory", file=sys.stderr)
        return 2
    log_file = project / "data" / "logs" / f"{flow.name}.log"
    with flow_logging(log_file, f"{flow.name} {params}") as to_file:
        try:
            state = flow(**params, project_dir=str(project), return_state=True)
        except KeyboardInterrupt:
            print(f"{flow.name} interrupted\nfull log: {log_file}", file=sys.stderr)
            return 130
        except Exception as e:  # the flow never ran, e.g. Prefect's temporary server did not start
            to_file(f"{flow.name} did not run", sys.exc_info())
            print(f"{flow.name} did not run: {type(e).__name__}: {e}\nfull log: {log_file}", file=sys.stderr)
            return 1
    if state.is_completed():
        print(done(state.result()))
        return 0
    print(failure_message(flow.name, state, log_file), file=sys.stderr)
    return 1


def failure_message(flow_name: str, state, log_file: Path) -> str:
    """`<flow> failed: <why>`, the log file, the run in the Prefect UI; an unexpected error says it is one."""
    from prefect.states import get_state_exception

    from tasks.errors import is_expected

    exc = get_state_exception(state)
    why = str(exc) if is_expected(exc) else \
        f"{type(exc).__name__}: {exc} (unexpected error: the traceback is in the full log)"
    return "\n".join([f"{flow_name} {state.name.lower()}: {why}", f"full log: {log_file}", _ui_hint(state)])


def _ui_hint(state) -> str:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_UI_URL

    run = f"runs/flow-run/{state.state_details.flow_run_id}"
    if PREFECT_API_URL.value():  # a server that outlives this process
        base = PREFECT_UI_URL.value() or PREFECT_API_URL.value().removesuffix("/api")
        return f"Prefect UI: {base.rstrip('/')}/{run}"
    return (f"Prefect UI: PREFECT_HOME={PREFECT_HOME.value()} prefect server start, "
            f"then open http://127.0.0.1:4200/{run}")


class _WithoutTraceback(logging.Formatter):
    """Formats like `inner` but leaves out the traceback. The record keeps exc_info and the exc_text that other
    formatters cache on it, so the API handler (the UI) and the log file still get the whole traceback."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


@contextmanager
def flow_logging(log_file: Path, header: str) -> Iterator[Callable[[str, Any], None]]:
    """While inside: Prefect's console handlers print no tracebacks, and every record reaching the root logger
    is appended, traceback included, to log_file after a header line. Yields a function that writes one record
    to the file only."""
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(PrefectFormatter(FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S",
                                          flow_run_fmt=FILE_FORMAT.replace("%(name)s", "Flow run %(flow_run_name)r"),
                                          task_run_fmt=FILE_FORMAT.replace("%(name)s", "Task run %(task_run_name)r")))
    to_file.stream.write(f"\n==== {datetime.now(UTC).astimezone():%Y-%m-%d %H:%M:%S} {header}\n")
    root = logging.getLogger()
    loggers = [root, *(lg for lg in root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    consoles = {id(h): h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}.values()
    saved = [(h, h.formatter) for h in consoles]
    for h, f in saved:
        h.setFormatter(_WithoutTraceback(f))
    root.addHandler(to_file)
    try:
        yield lambda msg, exc_info: to_file.handle(
            logging.LogRecord("flows.cli", logging.ERROR, __file__, 0, msg, None, exc_info))
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for h, f in saved:
            h.setFormatter(f)


def experiment_main(flow, doc: str, argv: list[str] | None, project: Path, what: str, no_act: str) -> int:
    """The command line of a flow that looks at one experiment (ab-analysis, canary): --experiment-id, --no-act."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--experiment-id", help=f"default: the running {what}")
    ap.add_argument("--no-act", action="store_true", help=no_act)
    ap.add_argument("--project-dir", default=str(project))
    args = ap.parse_args(argv)
    return run_flow(flow, args.project_dir, lambda r: f"{r['experiment_id']}: {r['summary']}",
                    experiment_id=args.experiment_id, act=not args.no_act)
