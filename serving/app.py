"""The prediction service: answers with @champion and, during an A/B experiment, routes a share of units to
@challenger; logs every prediction and accepts the observed outcomes.

    python -m serving [--port 8000] [--host 127.0.0.1] [--project-dir .]

    POST /predict   {"unit_id": "UA1545-EWR-20130101-0515", "features": {"dep_delay": 2, "carrier": "UA", ...}}
                    or {"instances": [{"unit_id": ..., "features": {...}}, ...]}
    POST /feedback  {"unit_id": "...", "outcome": 11.0}   or {"outcomes": [{"unit_id": ..., "outcome": ...}, ...]}
    GET  /health    models, versions, experiment, circuit breaker
    GET  /metrics   Prometheus
    POST /reload    re-read the registry aliases and the running experiment now (also done every few seconds)

Bound to 127.0.0.1 by default. With CT_SERVING_TOKEN set (in the environment, never in params.yaml or git),
/predict, /feedback and /reload require `Authorization: Bearer <token>`; bound to any other address, the service
refuses to start without one. A refused request is answered 401 and logs nothing; /health and /metrics stay open
(load balancers and Prometheus).

A unit goes to the challenger when a stable hash of (experiment id, unit id) falls below the experiment's share,
so a unit always meets the same variant. Models are loaded in the background when an alias moves and swapped
in one step: requests in flight finish on the models they started with. A challenger that fails is answered
for by the champion and counted; after `breaker_errors` failures in a row the challenger rests for
`breaker_cooldown_seconds`.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serving.ablog import ABLog, GroupCommit, store_url
from serving.net import is_loopback
from serving.schema import BadRequest
from serving.service import Service
from stages.common import PROJECT

log = logging.getLogger("serving")


TOKEN_VARIABLE = "CT_SERVING_TOKEN"


def serving_token(host: str, environ: dict[str, str]) -> str | None:
    """The token clients must present, from the environment; a service bound beyond loopback without one is
    refused (ValueError naming the variable)."""
    token = environ.get(TOKEN_VARIABLE, "").strip() or None
    if token is None and not is_loopback(host):
        raise ValueError(f"the service would be reachable from other machines ({host}) without authentication: "
                         f"set {TOKEN_VARIABLE} to a secret (e.g. `export {TOKEN_VARIABLE}=$(openssl rand -hex 32)`) "
                         f"and give it to clients as `Authorization: Bearer <token>`, or bind to 127.0.0.1")
    if token is not None and len(token) < 16:
        raise ValueError(f"{TOKEN_VARIABLE} is {len(token)} characters long: use at least 16 random characters")
    return token


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, refused (413) past `limit` bytes whether or not it says its length, 400 if malformed."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise BadRequest(413, f"request body of {int(length):,} bytes is over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"malformed JSON: {e}") from None


def authorizer(token: str | None):
    """A check that raises 401 unless the request carries `Authorization: Bearer <token>` (no check without a
    token)."""
    expected = f"Bearer {token}".encode() if token else None

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: the token is not guessable byte by byte
            raise BadRequest(401, "missing or wrong token: send `Authorization: Bearer <token>` (CT_SERVING_TOKEN)")

    return authorize


def create_app(service: Service, *, watch: bool = True, token: str | None = None):
    """The FastAPI app around a Service; the registry is read once at start-up, then every reload_seconds.
    With `token`, /predict, /feedback and /reload answer 401 to a request without `Authorization: Bearer <token>`."""
    from contextlib import asynccontextmanager

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    writer = GroupCommit(service.store)

    @asynccontextmanager
    async def lifespan(_app):
        service.reload()
        writer.start()
        if watch:
            service.start_watching()
        yield
        service.stop_watching()
        writer.stop()

    app = FastAPI(title="continuous-training prediction service", lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)

    authorize = authorizer(token)
    limit = service.max_body_bytes

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest):
        service.metrics.rejected.labels(request.url.path, str(e.status)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse({"error": e.message, "field": e.field}, status_code=e.status, headers=headers)

    @app.post("/predict")
    async def predict(request: Request):
        authorize(request)
        # The model inline on the event loop: a single-row prediction is a few ms of CPU under the GIL anyway, and
        # a thread hop per request would cost more than it saves. The log write is the writer thread's (a group
        # commit); the answer waits for it without holding up other requests.
        response, rows, t0 = service.answer(await read_json(request, limit))
        await writer.write(rows)
        service.account(rows, t0)
        return JSONResponse(response)

    @app.post("/feedback")
    async def feedback(request: Request):
        authorize(request)
        return JSONResponse(service.feedback(await read_json(request, limit)))

    @app.get("/health")
    async def health():
        h = service.health()
        return JSONResponse(h, status_code=200 if h["champion_version"] else 503)

    @app.post("/reload")
    async def reload(request: Request):
        import anyio

        authorize(request)

        swapped = await anyio.to_thread.run_sync(service.reload)
        return JSONResponse({"swapped": swapped, **service.health()})

    @app.get("/metrics")
    async def metrics():
        service.metrics.breaker_state.set(1.0 if service.breaker.is_open() else 0.0)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def build_service(project: Path) -> tuple[Service, dict]:
    """A Service configured from the project's params.yaml and environment (MLFLOW_TRACKING_URI, CT_AB_STORE_URL)."""
    from stages.common import load_params, tracking_uri

    params = load_params(project / "params.yaml")
    sv = params.ab.serving
    service = Service(model_name=params.registry.model_name, tracking_uri=tracking_uri(project),
                      store=ABLog(store_url(project, params.ab.store)), max_body_bytes=sv.max_body_bytes,
                      max_batch=sv.max_batch, reload_seconds=sv.reload_seconds, breaker_errors=sv.breaker_errors,
                      breaker_cooldown_seconds=sv.breaker_cooldown_seconds, log_features=sv.log_features)
    return service, {"host": sv.host, "port": sv.port}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project-dir", default=str(PROJECT))
    ap.add_argument("--host", help="default: ab.serving.host (127.0.0.1)")
    ap.add_argument("--port", type=int, help="default: ab.serving.port (8000)")
    args = ap.parse_args(argv)
    import os

    project = Path(args.project_dir).resolve()
    from stages.common import load_params

    sv = load_params(project / "params.yaml").ab.serving
    host, port = args.host or sv.host, args.port or sv.port
    try:
        token = serving_token(host, dict(os.environ))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from stages.common import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_libraries()
    service, _ = build_service(project)
    log.info(f"prediction service for '{service.model_name}' on http://{host}:{port} "
             f"(registry {service.tracking_uri}; log {service.store.url}; "
             f"{'token required' if token else 'no token: loopback only'})")
    uvicorn.run(create_app(service, token=token), host=host, port=port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
