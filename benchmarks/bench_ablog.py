"""The prediction log on PostgreSQL vs SQLite: latency and throughput of /predict with every prediction committed
before it is answered.

The service (`python -m serving`, one process) serves the tiny Ridge of bench_serve.py from a
throwaway registry; its A/B prediction log (CT_AB_STORE_URL) is the SQLite file of the default set-up, then a
PostgreSQL server started here (initdb in a temp dir, 127.0.0.1). The log is written by one thread in group
commits (serving.ablog.GroupCommit): a request is answered after its row is committed, the event loop is
not held during the round trip, and concurrent requests share a commit. Each store is measured with one client
sending sequential single-row requests and with 8 concurrent clients, a warm-up first; afterwards the rows in the
log are counted (every answered request must be there).

Run: `python benchmarks/bench_ablog.py [--requests 1000]`; figures also in benchmarks/out/bench_ablog.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serve import burst, load_data, server, tiny_ridge  # noqa: E402

from tests.conftest import free_port, postgres_server, tool_env  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "bench_ablog.json"
CLIENTS = (1, 8)


def load(url: str, rows: list[dict], n: int, clients: int, tag: str) -> dict:
    """n requests spread over `clients` threads, each with its own keep-alive connection."""
    return burst(url, lambda row, i: {"unit_id": f"{tag}-{i}", "features": row}, rows, n, clients)


def bench_store(name: str, store_url: str, tracking_uri: str, rows: list[dict], work: Path, args) -> dict:
    import sqlalchemy as sa

    project = work / f"project-{name}"
    project.mkdir()
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    port = free_port()
    env = tool_env(MLFLOW_TRACKING_URI=tracking_uri, CT_AB_STORE_URL=store_url)
    cmd = [sys.executable, "-m", "serving", "--project-dir", str(project), "--port", str(port),
           "--host", "127.0.0.1"]
    out = {}
    with server(cmd, env, f"http://127.0.0.1:{port}/health", work / f"{name}.log"):
        url = f"http://127.0.0.1:{port}/predict"
        load(url, rows, args.warmup, 1, f"warm-{name}")
        for c in CLIENTS:
            out[c] = load(url, rows, args.requests, c, f"{name}-{c}")
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        logged = conn.execute(sa.text("select count(*) from predictions")).scalar()
    engine.dispose()
    answered = args.warmup + sum(r["requests"] - r["errors"] for r in out.values())
    return {"by_clients": out, "rows_logged": int(logged), "answered": answered}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="timed requests per store and client count")
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()
    params, train, newest = load_data()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ablog-") as tmp:
        work = Path(tmp)
        tracking, rows = tiny_ridge(work, train, newest, params.source.target)
        results["SQLite"] = bench_store("sqlite", f"sqlite:///{work / 'ab.db'}", tracking, rows, work, args)
        with postgres_server(("ablog",)) as pg:
            results["PostgreSQL"] = bench_store("postgresql", pg["url"]("psycopg2", "ablog"), tracking, rows, work,
                                                args)
    print(f"\n/predict, tiny Ridge, every prediction committed to the log before it is answered "
          f"({args.requests} requests per line)")
    print(f"  {'log store':<12}{'clients':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'errors':>8}")
    for name, r in results.items():
        for c, x in r["by_clients"].items():
            print(f"  {name:<12}{c:>8}{x['p50_ms']:>9.2f}{x['p99_ms']:>9.2f}{x['req_per_s']:>8.0f}{x['errors']:>8}")
    ok = all(r["rows_logged"] == r["answered"] for r in results.values())
    for name, r in results.items():
        print(f"  {name}: {r['rows_logged']:,} rows in the log for {r['answered']:,} answered requests")
    for c in CLIENTS:
        s, p = results["SQLite"]["by_clients"][c], results["PostgreSQL"]["by_clients"][c]
        print(f"  {c} client(s): PostgreSQL / SQLite p99 {p['p99_ms'] / s['p99_ms']:.2f}x, "
              f"throughput {p['req_per_s'] / s['req_per_s']:.2f}x")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))
    print(f"figures in {OUT}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
