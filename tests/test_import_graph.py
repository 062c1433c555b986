"""The import graph of graft's own modules, counting imports inside functions: no cycles, and the
dependency rule of the four packages (envs and memory import nothing of ours, agent only envs)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "memory", "envs", "curricula")
MAY_IMPORT = {"envs": set(), "memory": set(), "agent": {"envs"}, "curricula": {"agent", "memory", "envs"}}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out["graft." + ".".join(parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The graft modules `path` imports anywhere in its body (a `from pkg import name` of a submodule counts
    as that submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("graft."):
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_no_import_cycles_among_graft_modules():
    g = graph()
    cycles, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in sorted(g.get(m, ())):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_packages_import_only_what_the_dependency_rule_allows():
    bad = []
    for m, deps in graph().items():
        pkg = m.split(".")[1]
        for d in deps:
            other = d.split(".")[1]
            if other != pkg and other not in MAY_IMPORT[pkg]:
                bad.append(f"{m} imports {d}")
    assert not bad, "\n".join(sorted(bad))
