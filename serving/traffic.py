"""Real traffic for the prediction service: run it as a process, send a week of flights as prediction requests,
then their observed outcomes as feedback (what a departure board and, later, the arrivals feed would do)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from serving.app import PROJECT


class ServiceProcess:
    """`python -m serving` for one project on 127.0.0.1, started and stopped by its owner; with
    `token`, the service requires it (CT_SERVING_TOKEN) and this client sends it."""

    def __init__(self, project: Path, port: int, env: dict[str, str] | None = None, log: Path | None = None,
                 timeout: float = 120, token: str | None = None):
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log or project / "serving.log"
        self._log = open(self.log_path, "ab")
        env = dict(env or os.environ)
        if token:
            env["CT_SERVING_TOKEN"] = token
        self.proc = subprocess.Popen([sys.executable, "-m", "serving", "--project-dir", str(project),
                                      "--host", "127.0.0.1", "--port", str(port)], cwd=PROJECT, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.http = httpx.Client(base_url=self.url, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"} if token else None)
        end = time.time() + timeout
        while True:
            try:
                if self.http.get("/health").status_code in (200, 503):
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.time() > end:
                self.stop()
                raise RuntimeError(f"the prediction service did not start; end of {self.log_path}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)

    def reload(self) -> dict:
        return self.http.post("/reload").json()

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def request_rows(frame, numeric: tuple[str, ...], categorical: tuple[str, ...], unit_id: str) -> list[dict]:
    """{unit_id, features} for every row of a batch frame, JSON-ready (missing values as null)."""
    cols = [*numeric, *categorical]
    feats = frame[cols].astype(object).where(frame[cols].notna(), None).to_dict("records")
    return [{"unit_id": u, "features": f} for u, f in zip(frame[unit_id], feats, strict=True)]


def send_predictions(http: httpx.Client, rows: list[dict], batch: int = 100) -> list[dict]:
    """POST the rows to /predict, `batch` instances per call; the service's answers in order."""
    out: list[dict] = []
    for i in range(0, len(rows), batch):
        r = http.post("/predict", json={"instances": rows[i:i + batch]})
        if r.status_code != 200:
            raise RuntimeError(f"/predict answered {r.status_code}: {r.text[:500]}")
        out.extend(r.json()["predictions"])
    return out


def send_outcomes(http: httpx.Client, outcomes: list[tuple[str, Any]], batch: int = 500) -> int:
    """POST observed outcomes to /feedback, `batch` per call; returns how many were recorded."""
    n = 0
    for i in range(0, len(outcomes), batch):
        body = {"outcomes": [{"unit_id": u, "outcome": y} for u, y in outcomes[i:i + batch]]}
        r = http.post("/feedback", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"/feedback answered {r.status_code}: {r.text[:500]}")
        n += r.json()["recorded"]
    return n
