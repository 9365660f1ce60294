"""DVC stage `search`: score every declared candidate (params `search.candidates`) on the newest weeks of the
training window and write the choice to data/search/results.json, which `train` fits on the whole window.

The weekly flow runs the same candidates as parallel tasks on a Dask cluster and records their results as this
stage's output (`dvc commit`); `dvc repro` here fits them one after another and reaches the same choice."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ml.search import candidates, score_candidate, summary, validation_split
from stages.common import cli, fmt_int, load_stage_params, write_json


def run_search(params, train: pd.DataFrame, log=print) -> dict:
    """Score the candidates one after another; the summary `train` reads."""
    declared = candidates(params)
    if not declared:
        return summary(params, [])
    fit, val = validation_split(train, params)
    results = []
    for i, (name, cfg) in enumerate(declared.items(), 1):
        r = score_candidate(params.source, name, cfg, fit, val)
        log(f"search: [{i}/{len(declared)}] {name} ({r['family']}) validation {r['metric']} {r['value']:.4g} "
            f"in {r['fit_seconds']:.1f} s")
        results.append(r)
    return summary(params, results)


def describe(doc: dict) -> str:
    if doc["chosen"] is None:
        return "search: no candidates declared (search.candidates); train fits the train section as it is"
    by = {c["name"]: c for c in doc["candidates"]}
    best, top = by[doc["chosen"]], doc["candidates"][0]
    kept = (f" (kept: {top['name']} {top['value']:.4g} is not more than {doc['min_gain']:.0%} better)"
            if top["name"] != best["name"] else "")
    runner = [c for c in doc["candidates"] if c["name"] != best["name"]][:1]
    nxt = f"; next {runner[0]['name']} {runner[0]['value']:.4g}" if runner and not kept else ""
    return (f"search: chose {doc['chosen']} ({best['family']}) of {len(doc['candidates'])} candidates: validation "
            f"{doc['metric']} {best['value']:.4g} on {fmt_int(doc['validation_rows'])} rows of the newest "
            f"{doc['validation_weeks']} training week(s){kept}{nxt}")


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/prepared/train.parquet")
    ap.add_argument("--out", default="data/search")
    args = ap.parse_args(argv)
    params = load_stage_params(args.params)
    declared = candidates(params)
    doc = run_search(params, pd.read_parquet(args.train) if declared else pd.DataFrame())
    write_json(Path(args.out) / "results.json", doc)
    print(describe(doc))


if __name__ == "__main__":
    main()
