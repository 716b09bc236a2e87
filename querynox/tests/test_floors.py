"""The house stands on floors: querynox (configuration) → chat → billing, rag → accounts → core.

A module imports only from its own app or from floors below it, counting imports inside functions; an app's
presentation modules (views, routers, consumers, admin…) may use any app's services but never querynox; no product
module imports the test support; and there is no import cycle among product modules. ../shared/tools/layers.py
checks the same for whoever has it; this test keeps it so on any machine."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOOR = {"querynox": 4, "chat": 3, "billing": 2, "rag": 2, "accounts": 1, "core": 0}
PRESENTATION = {"views", "api", "consumers", "urls", "admin", "forms", "routing"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    modules = {}
    for app in FLOOR:
        for path in (ROOT / app).rglob("*.py"):
            parts = path.relative_to(ROOT).parts
            if "tests" in parts or "migrations" in parts or path.name.startswith("test_"):
                continue
            modules[module_name(path)] = path
    return modules


def imported_names(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (a function's imports count too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: {other for other in imported_names(path) if other in modules and other != name}
            for name, path in modules.items()}


def climbing_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in graph.items():
        for target in targets:
            app, other = module.split(".")[0], target.split(".")[0]
            presentation = bool(PRESENTATION & set(module.split(".")[1:]))
            if app != other and FLOOR[other] >= FLOOR[app] and not (presentation and other != "querynox"):
                found.append(f"{module} imports {target}")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_floor_above_its_own():
    assert climbing_imports(import_graph()) == []


def test_no_import_cycles_among_product_modules():
    assert cycles(import_graph()) == []


def test_core_imports_no_app():
    graph = import_graph()
    assert [f"{m} imports {t}" for m, ts in graph.items() if m.startswith("core") for t in ts
            if not t.startswith("core")] == []


def test_no_product_module_imports_the_test_support():
    offenders = [
        f"{name} imports {target}"
        for name, path in product_modules().items()
        for target in imported_names(path)
        if target.split(".")[0] in ("testsupport", "conftest")
    ]
    assert offenders == []


def test_chat_charges_only_through_billing_charges():
    """Quota counters and the ledger are billing's own; chat reserves, settles and releases through one door."""
    offenders = [
        f"{name} imports {target}"
        for name, path in product_modules().items()
        if name.startswith("chat")
        for target in imported_names(path)
        if target.startswith(("billing.quota", "billing.ledger"))
    ]
    assert offenders == []


def test_the_checker_sees_climbing_imports_and_cycles():
    graph = {"core.metrics": {"chat.models"}, "chat.models": {"core.metrics"}, "rag.chunking": {"chat.models"}}

    assert climbing_imports(graph) == ["core.metrics imports chat.models", "rag.chunking imports chat.models"]
    assert cycles(graph) == [{"core.metrics", "chat.models"}]
    assert climbing_imports({"chat.views": {"billing.models"}, "chat.api": {"querynox.settings"}}) == [
        "chat.api imports querynox.settings"
    ]
