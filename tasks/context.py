"""What every task of one weekly run needs to know: where the project is, its params, the week, the MLflow run."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ml.config import Params


@dataclass(frozen=True)
class WeekRun:
    project: Path
    params: Params
    as_of: date
    dry_run: bool = False
    source: str | None = None  # a file or glob that replaces the configured source for the new batch
    experiment_id: str = ""
    parent_run_id: str = ""  # the MLflow run of this flow run

    @property
    def week(self) -> str:
        return self.as_of.isoformat()

    def path(self, *parts: str) -> Path:
        return self.project.joinpath(*parts)

    @property
    def run_dir(self) -> Path:
        """Per-week outputs kept outside DVC: validation result, drift report, decision."""
        return self.path("data", "runs", self.week)

    @property
    def staged_batch(self) -> Path:
        return self.path("data", "staging", f"{self.week}.parquet")


def git_info(project: Path) -> dict[str, str]:
    """Commit and dirtiness of the project's code (data files are DVC's business, not git's)."""

    def git(*args: str) -> str:
        p = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else ""

    sha = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!data")
    return {"git_sha": sha, "git_dirty": str(bool(dirty)).lower()}
