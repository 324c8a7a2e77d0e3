"""The house's shape: packages that mirror the concepts, and an import graph without circles."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import suite

ROOT = Path(suite.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every suite module ``name`` imports when it runs, at the top or inside a function
    (not the names imported for type checkers only, under ``if TYPE_CHECKING:``)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(head + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t != "suite":
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_the_import_graph_has_no_circles_and_few_levels():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)

    @cache
    def depth(n: str) -> int:
        return 1 + max((depth(m) for m in g[n]), default=0)

    deepest = max(g, key=depth)
    assert depth(deepest) <= 14, f"{deepest} sits {depth(deepest)} levels deep (at most 14; the flat layout had 16)"


CORE = {"errors", "vocab", "params", "registry", "hookspecs", "owners", "stores", "journal"}
MAY_IMPORT = {  # package -> the suite packages and top-level modules it may import (docs/design.md)
    "exec": CORE,
    "specs": CORE,
    "engine": CORE | {"context", "contract", "problem", "stacked", "exec", "specs"},
    "tracking": CORE | {"exec", "specs", "engine"},
    "distributed": CORE | {"exec", "specs", "engine", "tracking", "report"},
    "grids": CORE | {"progress", "exec", "specs", "engine", "tracking", "report"},
    "tuning": CORE | {"context", "crossing", "exec", "specs", "engine", "tracking", "distributed", "report"},
    "report": CORE | {"context", "theory", "critical", "crossing", "exec", "specs", "tracking", "tuning"},
}


def test_each_package_imports_only_what_it_may():
    def top(name: str) -> str:
        return name.split(".")[1]

    for name, deps in graph().items():
        if name.count(".") and top(name) in MAY_IMPORT:
            extra = {top(d) for d in deps if d.count(".")} - MAY_IMPORT[top(name)] - {top(name)}
            assert not extra, f"{name} imports {sorted(extra)}, which {top(name)} may not (docs/design.md)"


def test_no_core_module_knows_a_built_in_plugin():
    """The built-in plugins are plugins: only suite.builtin imports suite.builtin (a core rule that
    needs to know about a problem asks the problem, e.g. Problem.sgd_steps_to_target)."""
    g = graph()
    knows = {n: sorted(m for m in deps if m.startswith("suite.builtin")) for n, deps in g.items()
             if not n.startswith("suite.builtin")}
    assert not {n: m for n, m in knows.items() if m}, "core modules importing built-in plugins"


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 600}
    assert not long, f"modules over 600 lines (split them by job): {long}"


def test_a_file_name_names_one_thing():
    """No two modules share a file name, except a command module of the CLI: ``suite.cli.X`` is
    the command ``suite X`` of what another package's ``X`` is."""
    seen: dict[str, str] = {}
    for name, path in sorted(modules().items()):
        if path.name in ("__init__.py", "__main__.py") or name.startswith("suite.cli."):
            continue
        assert path.name not in seen, f"{seen[path.name]} and {name} share a file name; name what each one is"
        seen[path.name] = name


def test_no_module_carries_a_package_name_as_a_prefix():
    mods = modules()
    packages = {n.rpartition(".")[2] for n, p in mods.items() if p.name == "__init__.py"}
    offenders = [n for n in mods if any(n.rpartition(".")[2].startswith(f"{pkg}_") for pkg in packages)]
    assert not offenders, f"modules named like a package's part: {offenders}"


def test_one_process_pool_and_one_signal_handler():
    """Only suite.exec.pool starts processes (and suite.tracking.writer its one writer process), and only
    suite.exec.signals installs signal handlers."""
    for name, path in modules().items():
        text = path.read_text()
        if name != "suite.exec.pool":
            for marker in ("get_context(", "ProcessPoolExecutor", ".Process(", "os.fork(", "os.spawn"):
                assert marker not in text, f"{name} starts processes ({marker}); use suite.exec.pool.Pool"
        if name != "suite.tracking.writer":  # the store's one writer process (not a pool: one child, one job)
            assert "subprocess.Popen(" not in text, f"{name} starts a process; use suite.exec.pool.Pool"
        if name != "suite.exec.signals":
            assert "signal.signal(" not in text or name == "suite.exec.pool" and "SIG_IGN" in text, \
                f"{name} installs a signal handler; use suite.exec.signals"


def test_no_two_modules_define_the_same_public_class():
    seen: dict[str, str] = {}
    for name, path in sorted(modules().items()):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                assert node.name not in seen, f"class {node.name} is defined in {seen[node.name]} and {name}"
                seen[node.name] = name


def test_error_classes_live_in_suite_errors():
    for name, path in modules().items():
        if name == "suite.errors":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                assert not bases & {"Exception", "SuiteError", "SpecError", "StoreError"}, \
                    f"{name} defines the error class {node.name}; error classes live in suite/errors.py"


def test_the_vocabulary_is_spelled_once():
    """No module but suite.vocab spells a "suite.<name>" tag or attribute as a string literal."""
    for name, path in modules().items():
        if name == "suite.vocab":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                v = node.value
                if v.startswith("suite.") and v.replace("suite.", "", 1).replace("_", "").isalpha() and " " not in v:
                    if v in {"suite.plugins", "suite.cli"} or v.startswith("suite.dist."):
                        continue  # the entry-point group; a module path
                    raise AssertionError(f"{name} spells {v!r}; use the constant in suite/vocab.py")


def test_no_package_shadows_the_notebook_api():
    """``suite.run``, ``suite.tune`` and ``suite.results`` are functions: a subpackage or module
    of that name would replace the function as soon as anything imported it."""
    for name in ("run", "tune", "results"):
        assert not (ROOT / name).is_dir() and not (ROOT / f"{name}.py").exists(), f"suite/{name} shadows suite.{name}()"
    import suite.tuning.plan  # noqa: F401 - what the tuning path imports

    assert callable(suite.tune) and callable(suite.run) and callable(suite.results)
