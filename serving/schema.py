"""The service's input: the model signature's columns, and each request's instances and features checked against
them (a BadRequest names the field)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


class BadRequest(Exception):
    """A client error: the status code and a message naming the field."""

    def __init__(self, status: int, message: str, field_name: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field_name


NUMBER, INTEGER, STRING, BOOLEAN = "number", "integer", "string", "boolean"
_KINDS = {"double": NUMBER, "float": NUMBER, "long": INTEGER, "integer": INTEGER, "string": STRING,
          "boolean": BOOLEAN}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # number | integer | string | boolean
    required: bool  # False: null is accepted (a missing value the model handles)


def schema_from_signature(signature) -> list[Column]:
    """The input columns of an MLflow model signature (column-based signatures only)."""
    if signature is None or signature.inputs is None:
        raise ValueError("the model has no input signature: log it with one (mlflow.models.infer_signature)")
    cols = []
    for spec in signature.inputs.inputs:
        if spec.name is None:
            raise ValueError("the model's signature has unnamed inputs; the service needs named columns")
        kind = _KINDS.get(str(spec.type).split(".")[-1].lower())
        if kind is None:
            raise ValueError(f"column '{spec.name}' has type {spec.type}, which the service does not accept")
        cols.append(Column(spec.name, kind, bool(getattr(spec, "required", True))))
    return cols


def check_features(features: Any, schema: list[Column], where: str) -> dict[str, Any]:
    """The features of one instance, checked against the schema; raises BadRequest naming the field."""
    if not isinstance(features, dict):
        raise BadRequest(422, f"'{where}' must be an object of feature values", where)
    names = {c.name for c in schema}
    extra = [k for k in features if k not in names]
    if extra:
        raise BadRequest(422, f"unknown feature '{where}.{extra[0]}'" + (f" (+{len(extra) - 1} more)" if len(extra) > 1
                         else "") + f"; the model takes: {', '.join(c.name for c in schema)}", f"{where}.{extra[0]}")
    out = {}
    for c in schema:
        key = f"{where}.{c.name}"
        if c.name not in features:
            raise BadRequest(422, f"missing feature '{key}' ({c.kind})", key)
        v = features[c.name]
        if v is None:
            if c.required:
                raise BadRequest(422, f"feature '{key}' is required; null given", key)
            out[c.name] = None
            continue
        if c.kind in (NUMBER, INTEGER):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise BadRequest(422, f"feature '{key}' must be a {c.kind}, got {json.dumps(v)[:40]}", key)
            if c.kind == INTEGER and float(v) != int(v):
                raise BadRequest(422, f"feature '{key}' must be a whole number, got {v}", key)
            if not math.isfinite(v):
                raise BadRequest(422, f"feature '{key}' must be finite", key)
        elif c.kind == STRING and not isinstance(v, str):
            raise BadRequest(422, f"feature '{key}' must be a string, got {json.dumps(v)[:40]}", key)
        elif c.kind == BOOLEAN and not isinstance(v, bool):
            raise BadRequest(422, f"feature '{key}' must be true or false, got {json.dumps(v)[:40]}", key)
        out[c.name] = v
    return out


def unit_id(v: Any, where: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)) or str(v) == "" or len(str(v)) > 200:
        raise BadRequest(422, f"'{where}' must be a non-empty string or integer (at most 200 characters)", where)
    return str(v)


def example(schema: list[Column]) -> dict[str, Any]:
    return {c.name: (0.0 if c.kind in (NUMBER, INTEGER) else "x" if c.kind == STRING else False) for c in schema}


def instances(payload: Any, max_batch: int) -> list[dict]:
    if not isinstance(payload, dict):
        raise BadRequest(422, "body must be a JSON object: {'unit_id', 'features'} or {'instances': [...]}")
    if "instances" in payload:
        extra = [k for k in payload if k != "instances"]
        if extra:
            raise BadRequest(422, f"unknown field '{extra[0]}' beside 'instances'", extra[0])
        items = payload["instances"]
        if not isinstance(items, list) or not items:
            raise BadRequest(422, "'instances' must be a non-empty list", "instances")
        if len(items) > max_batch:
            raise BadRequest(413, f"'instances' has {len(items)} entries; at most {max_batch} per call", "instances")
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                raise BadRequest(422, f"'instances[{i}]' must be an object", f"instances[{i}]")
    else:
        items = [payload]
    for i, it in enumerate(items):
        extra = [k for k in it if k not in ("unit_id", "features", "request_id")]
        if extra:
            where = f"instances[{i}]." if "instances" in payload else ""
            raise BadRequest(422, f"unknown field '{where}{extra[0]}' (expected unit_id, features, request_id)",
                             f"{where}{extra[0]}")
    return items
