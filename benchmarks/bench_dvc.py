"""Cold `dvc repro` vs a bare pandas/sklearn script doing the same fit + evaluation; and a no-op repro.

Both sides run as fresh processes on the same raw batches of the default window, alternating, `--reps`
times; medians are compared. Targets: cold ratio <= 1.3, no-op <= 2 s.
Run: `make bench` (or `python benchmarks/bench_dvc.py --reps 3`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import edit_params, make_project, tool_env  # noqa: E402

BARE = r'''
import glob, sys
import numpy as np, pandas as pd, yaml
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder
p = yaml.safe_load(open("params.yaml"))
s, h = p["source"], p["train"]["hgb"]
files = sorted(glob.glob("data/raw/*.parquet"))
train = pd.concat([pd.read_parquet(f) for f in files[:-1]], ignore_index=True)
hold = pd.read_parquet(files[-1])
num, cat = s["numeric_features"], s["categorical_features"]
for df in (train, hold):
    df[cat] = df[cat].astype(str)
model = Pipeline([("prep", ColumnTransformer([("cat", OrdinalEncoder(handle_unknown="use_encoded_value",
                   unknown_value=np.nan), cat), ("num", "passthrough", num)])),
                  ("model", HistGradientBoostingRegressor(loss=h["loss"], max_iter=h["max_iter"],
                   learning_rate=h["learning_rate"], max_leaf_nodes=h["max_leaf_nodes"],
                   min_samples_leaf=h["min_samples_leaf"], categorical_features=list(range(len(cat))),
                   early_stopping=False, random_state=p["train"]["seed"]))])
model.fit(train[num + cat], train[s["target"]])
mae = np.abs(model.predict(hold[num + cat]) - hold[s["target"]]).mean()
base = np.abs(hold[s["target"]] - train[s["target"]].median()).mean()
print(f"bare: mae {mae:.3f} baseline {base:.3f}")
'''


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    return dt, p.stdout


WINDOWS = [("2013-06-02", 8), ("2013-12-29", 48)]  # the default window, and (almost) the whole year


def bench(tmp: Path, as_of: str, weeks: int, reps: int) -> None:
    seed = make_project(tmp / f"seed-{weeks}")
    edit_params(seed, window={"as_of": as_of, "train_weeks": weeks})
    timed([sys.executable, "-m", "stages.ingest"], seed)
    (seed / "bare.py").write_text(BARE)
    cold, bare, noop = [], [], []
    for i in range(reps):
        repo = tmp / f"rep-{weeks}-{i}"
        shutil.copytree(seed, repo, symlinks=True)  # fresh repo: empty DVC cache and run-cache
        cold.append(timed(["dvc", "repro"], repo)[0])
        dt, out = timed([sys.executable, "bare.py"], repo)
        bare.append(dt)
        noop.append(timed(["dvc", "repro"], repo)[0])
    m = json.loads((repo / "data/eval/metrics.json").read_text())
    c, b, n = statistics.median(cold), statistics.median(bare), statistics.median(noop)
    print(f"\n== as_of {as_of}, {weeks}-week window, {m['model']['rows']:,} holdout rows ==")
    print(f"pipeline: mae {m['model']['mae']:.3f} baseline {m['baseline']['mae']:.3f}   {out.strip()}")
    print(f"dvc repro cold     median {c:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in cold)})")
    print(f"bare script        median {b:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"ratio cold/bare    {c / b:6.2f}x   (target <= 1.3)")
    print(f"dvc repro no-op    median {n:6.2f} s  (target <= 2 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dvc-") as tmp:
        for as_of, weeks in WINDOWS:
            bench(Path(tmp), as_of, weeks, args.reps)


if __name__ == "__main__":
    main()
