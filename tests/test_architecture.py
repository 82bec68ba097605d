"""The import rule (docs/DESIGN.md "Who imports whom"), checked on the source with `ast`.

Order, bottom to top: melcore (the foundation) imports no project package; hifigan imports
only melcore; datasets imports melcore and the mel formula (hifigan.meldataset);
improved_diffusion imports only melcore (the diffusion knows no audio and no vocoder);
evaluation (with the orchestration in evaluation.pipeline) may import all of these;
scripts/ and benchmarks/ sit on top and nothing below imports them. Every import counts,
at module level or inside a function, and no two project modules may import each other
through any chain (a cycle). No project module changes os.environ or the umask at import.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("melcore", "hifigan", "datasets", "improved_diffusion", "evaluation")
TOP = ("scripts", "benchmarks")

# Layer -> the project modules it may import (a prefix matches the module and its children).
ALLOWED: dict[str, tuple[str, ...]] = {
    "melcore": ("melcore",),
    "hifigan": ("melcore", "hifigan"),
    "datasets": ("melcore", "datasets", "hifigan.meldataset"),
    "improved_diffusion": ("melcore", "improved_diffusion"),
    "evaluation": ("melcore", "hifigan", "datasets", "improved_diffusion", "evaluation"),
    "scripts": ("melcore", "hifigan", "datasets", "improved_diffusion", "evaluation", "scripts"),
    "benchmarks": (
        "melcore",
        "hifigan",
        "datasets",
        "improved_diffusion",
        "evaluation",
        "benchmarks",
    ),
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages, scripts and benchmarks."""
    out = {}
    for top in PACKAGES + TOP:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest project module that `name` (a dotted import target) names or lies in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """Project modules `module` imports anywhere in its file (functions included)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            # `from a import b` imports module a.b when there is one, else a name of a.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for t in targets:
            hit = _resolve(t, modules)
            if hit is not None and hit != module:
                found.add(hit)
    return found


def project_graph() -> dict[str, set[str]]:
    files = module_files()
    names = set(files)
    return {m: imports_of(m, p, names) for m, p in files.items()}


def layer(module: str) -> str:
    return module.split(".")[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import that the layer of `a` may not make."""
    bad = []
    for src, targets in sorted(graph.items()):
        allowed = ALLOWED[layer(src)]
        for dst in sorted(targets):
            if not any(dst == a or dst.startswith(a + ".") for a in allowed):
                bad.append(f"{src} -> {dst}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# -- the checker can fail -----------------------------------------------------------------------
def test_checker_reports_a_cycle_and_an_upward_import():
    fake = {
        "melcore.a": {"melcore.b"},
        "melcore.b": {"melcore.a"},  # a cycle
        "improved_diffusion.x": {"hifigan.inference"},  # the diffusion may not vocode
        "datasets.y": {"hifigan.meldataset", "hifigan.models"},  # the formula yes, the vocoder no
        "hifigan.models": {"melcore.a"},
    }
    assert cycles(fake) == [["melcore.a", "melcore.b"]]
    assert upward_imports(fake) == [
        "datasets.y -> hifigan.models",
        "improved_diffusion.x -> hifigan.inference",
    ]


def test_checker_resolves_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import thing\n    import pkg.c\n")
    names = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    assert imports_of("pkg.a", pkg / "a.py", names) == {"pkg.b", "pkg.c"}


def test_graph_sees_the_project():
    graph = project_graph()
    assert {
        "melcore.errors",
        "hifigan.meldataset",
        "improved_diffusion.train_util",
        "evaluation.pipeline",
    } <= set(graph)
    assert "melcore.errors" in graph["improved_diffusion.unet"]


# -- the rule ---------------------------------------------------------------------------------
def test_no_import_cycles():
    assert cycles(project_graph()) == []


def test_no_import_against_the_order():
    assert upward_imports(project_graph()) == []


_PROBE = """
import importlib, json, os, pkgutil, sys
import numpy, torch  # third-party set-up happens before the snapshot
def umask():
    for line in open("/proc/self/status"):
        if line.startswith("Umask:"):
            return line.split()[1]
before = (dict(os.environ), umask())
pkg = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(pkg.__path__, sys.argv[1] + "."):
    importlib.import_module(info.name)
after = (dict(os.environ), umask())
changed = sorted(k for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k))
print(json.dumps({"env": changed, "umask": [before[1], after[1]]}))
"""


def probe(package: str, cwd: Path) -> dict:
    """Import every module of `package` in a fresh interpreter (OMP_WAIT_POLICY unset, as
    for a user who never set it): which environment variables changed, and the umask."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, package],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_probe_reports_a_package_that_changes_the_process(tmp_path):
    (tmp_path / "noisy").mkdir()
    (tmp_path / "noisy" / "__init__.py").write_text("")
    (tmp_path / "noisy" / "setup.py").write_text(
        "import os\nos.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')\nos.umask(0o077)\n"
    )
    result = probe("noisy", tmp_path)
    assert result["env"] == ["OMP_WAIT_POLICY"] and result["umask"][0] != result["umask"][1]


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_changes_nothing_in_the_process(package):
    result = probe(package, ROOT)
    assert result["env"] == []
    assert result["umask"][0] == result["umask"][1]
