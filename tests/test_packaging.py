"""The install contract: one `graft` namespace, no bare imports, and the dependency rule."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "memory", "envs", "curricula")
# ARCHITECTURE.md: which graft packages each package may import.
ALLOWED = {"envs": set(), "memory": set(), "agent": {"envs"}, "curricula": {"agent", "memory", "envs", "curricula"}}


def graft_imports(path: Path) -> set[str]:
    """The graft packages a source file imports; bare top-level names count as violations."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "graft" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in PACKAGES:
                found.add(f"bare:{parts[0]}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_dependency_rule_and_no_bare_imports(package):
    allowed = ALLOWED[package] | {package}
    for path in (ROOT / package).rglob("*.py"):
        imports = graft_imports(path)
        bare = {i for i in imports if i.startswith("bare:")}
        assert not bare, f"{path.relative_to(ROOT)} imports {bare}: use graft.<package>"
        assert imports <= allowed | {"configs"}, f"{path.relative_to(ROOT)} imports {imports - allowed}"


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for package in PACKAGES + ("configs",):
        for init in (ROOT / package).rglob("__init__.py"):
            dotted = "graft." + ".".join(init.parent.relative_to(ROOT).parts)
            assert dotted in listed, f"{dotted} is missing from [tool.setuptools] packages"


def test_graft_namespace_imports_and_bare_names_do_not(tmp_path):
    code = (
        "import importlib.util, graft.agent, graft.envs, graft.memory, graft.curricula, graft.configs\n"
        "print(all(importlib.util.find_spec(n) is None for n in ('agent', 'curricula')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_configs_ship_inside_the_package():
    import graft.configs

    folder = Path(graft.configs.__file__).parent
    assert (folder / "chat.yaml").exists() and (folder / "modality" / "grid.yaml").exists()
