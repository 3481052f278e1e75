"""The house's floors hold: the import-linter contracts in pyproject.toml (domain floors import downward
only; the agent side imports no Django and no server module), no import circle between the apps' modules,
and jobs queued under the old `<app>.tasks` module paths still run after the move to `<app>.jobs`."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
PACKAGES = ("omoi_site", "tickets", "tasks", "collaboration", "agents")


def test_import_linter_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=BASE_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout and result.stdout.count("KEPT") == 2


def _import_cycles(graph) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), counting every import a file makes, at any depth."""
    modules = {m for m in graph.modules if ".migrations" not in m}
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules} for m in modules}
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(module):
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(modules):
        if module not in index:
            visit(module)
    return groups


def test_no_import_circle_between_modules():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    assert _import_cycles(graph) == []


@pytest.mark.django_db
def test_jobs_queued_under_the_old_tasks_modules_point_at_the_jobs_modules_after_migrating():
    from django.apps import apps
    from django_tasks_db.models import DBTaskResult

    from tasks.jobs import reap_expired_leases

    migration = importlib.import_module("tasks.migrations.0004_jobs_modules_renamed")
    queued = reap_expired_leases.enqueue()
    DBTaskResult.objects.filter(pk=queued.id).update(task_path="tasks.tasks.reap_expired_leases")

    migration.point_queued_jobs_at_jobs_modules(apps, None)

    row = DBTaskResult.objects.get(pk=queued.id)
    assert row.task_path == "tasks.jobs.reap_expired_leases"
    assert row.task.func is reap_expired_leases.func  # the worker can import and run it


def _function_level_imports_of_another_app() -> list[tuple[str, int, str]]:
    import ast

    found = []
    for app in PACKAGES:
        for path in sorted((BASE_DIR / app).rglob("*.py")):
            if "migrations" in path.parts or "tests" in path.parts:
                continue
            source = path.read_text()
            for function in ast.walk(ast.parse(source)):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(function):
                    names = [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else (
                        [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
                    for name in names:
                        if name.split(".")[0] in PACKAGES and name.split(".")[0] != app:
                            found.append((str(path.relative_to(BASE_DIR)), node.lineno, name))
    return sorted(set(found))


def test_imports_of_another_app_sit_at_module_level_except_the_hook_connections_which_say_why():
    found = _function_level_imports_of_another_app()
    assert len(found) < 5, found
    for path, line, _module in found:
        lines = (BASE_DIR / path).read_text().splitlines()
        # the reason is written right above the import (or above the function holding it)
        assert any("#" in text or '"""' in text for text in lines[max(0, line - 6):line - 1]), (path, line)
