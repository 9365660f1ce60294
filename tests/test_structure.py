"""The project's import graph, read from the source (every import, also those inside functions): `ml/` imports
nothing of the project outside `ml/`, and every DVC stage depends on the code it runs, so a change in shared code
reruns it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ml", "stages", "serving", "tasks", "flows", "deployments", "cli", "benchmarks")


def imports(module: str) -> set[str]:
    """The project modules `module` (dotted) imports anywhere in its file."""
    path = ROOT / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in PACKAGES and (ROOT / (n.replace(".", "/") + ".py")).exists()}
    return out


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(imports(m))
    return seen


def test_ml_imports_nothing_of_the_project_outside_ml():
    offenders = {f"{p.stem}: {m}" for p in (ROOT / "ml").glob("*.py") for m in imports(f"ml.{p.stem}")
                 if not m.startswith("ml.")}
    assert not offenders, sorted(offenders)


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_depends_on_every_module_it_runs(stage):
    spec = STAGES[stage]
    module = re.search(r"python -m (\S+)", spec["cmd"]).group(1)
    deps = [str(d) for d in spec["deps"]]
    code = {m.replace(".", "/") + ".py" for m in closure(module)}
    missing = [f for f in sorted(code) if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"dvc.yaml stage '{stage}' runs {module} but does not depend on {missing}"


LAYERS = ("ml", "stages", "serving", "tasks", "flows", "deployments", "cli")  # each imports only from those before it


def project_modules() -> list[str]:
    return [f"{pkg}.{p.stem}" for pkg in LAYERS for p in sorted((ROOT / pkg).glob("*.py")) if p.stem != "__init__"]


def test_no_module_imports_a_layer_above_its_own():
    rank = {pkg: i for i, pkg in enumerate(LAYERS)}
    upward = sorted(f"{m} -> {d}" for m in project_modules() for d in imports(m)
                    if d.split(".")[0] in rank and rank[d.split(".")[0]] > rank[m.split(".")[0]])
    assert not upward, upward


def test_the_project_modules_import_no_circle():
    graph = {m: {d for d in imports(m) if d != m} for m in project_modules()}
    circles, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                circles.append(" -> ".join([*path[path.index(d):], d]))
            elif d not in state:
                visit(d, [*path, d])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not circles, circles


def test_the_deployment_names_flows_start_each_other_by_are_those_prefect_yaml_applies():
    from ml.names import DEPLOYMENTS

    applied = set()
    for d in yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]:
        path, fn = d["entrypoint"].split(":")
        flow = re.search(rf'@flow\(name="([^"]+)"[^)]*\)\s*\ndef {fn}\(', (ROOT / path).read_text())
        assert flow, f"{d['entrypoint']}: no @flow(name=...) on {fn}"
        applied.add(f"{flow.group(1)}/{d['name']}")
    assert applied == set(DEPLOYMENTS)
