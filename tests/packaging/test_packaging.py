"""What installs and what ships: declared dependencies cover every import, requirements files agree with
pyproject, the wheel holds only the product, and the Function App's package holds only what it runs.

The product (``shared``, ``handlers``, ``labguard``, ``function_app``) never imports dev tooling; that is
import-linter's contract in pyproject.toml. Here: it never starts dev tooling as a process either.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import distributions, packages_distributions
from importlib.util import find_spec
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
FIRST_PARTY = {"shared", "handlers", "labguard", "function_app", "devtools", "emulator", "bench", "tests"}
PRODUCT = ("shared", "handlers", "labguard", "function_app.py")
DEV_TOOLING = ("devtools", "emulator", "bench")
FUNCTION_APP_SHIPS = {
    "function_app.py",
    "host.json",
    "handlers",
    "shared",
    "requirements.txt",
    "policy.yaml",
    "policy.yaml.checked.json",
}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line and (ROOT / line).exists()]


def python_files(top: str) -> list[Path]:
    path = ROOT / top
    return [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(files: list[Path]) -> set[str]:
    """Every absolute import (``import a.b``, ``from a.b import c``) anywhere in the files, also inside functions."""
    found: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return found


def third_party(modules: set[str], local: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
    return {
        m for m in modules if (top := m.split(".")[0]) not in sys.stdlib_module_names | FIRST_PARTY and top not in local
    }


@cache
def _file_owners() -> dict[Path, str]:
    owners: dict[Path, str] = {}
    for dist in distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or ():
            owners[Path(str(dist.locate_file(file)))] = name
    return owners


@cache
def _top_level_owners() -> dict[str, list[str]]:
    return packages_distributions()


@cache
def distribution_of(module: str) -> str:
    """The installed distribution that provides ``module``. A namespace package (``azure``) has many
    distributions, so those are resolved through the file the deepest importable module comes from."""
    candidates = _top_level_owners().get(module.split(".")[0], [])
    if len(candidates) == 1:
        return canonicalize_name(candidates[0])
    parts = module.split(".")
    while parts:
        spec = find_spec(".".join(parts))
        if spec is not None and spec.origin and spec.origin not in ("namespace", "built-in"):
            owner = _file_owners().get(Path(spec.origin))
            if owner:
                return owner
        parts.pop()
    raise AssertionError(f"no installed distribution provides {module!r} (candidates {candidates})")


def names(requirements: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in requirements]
    return {canonicalize_name(r.name): r for r in reqs}


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("-r ")]


RUNTIME = names(PYPROJECT["project"]["dependencies"])
DEV = names(PYPROJECT["project"]["optional-dependencies"]["dev"])
APP_PINS = names(requirement_lines(ROOT / "requirements.txt"))
DEV_PINS = names(requirement_lines(ROOT / "requirements-dev.txt"))


# ---- the product stays apart from dev tooling ---------------------------------------------------

PROCESS_MODULES = {"subprocess", "multiprocessing", "runpy", "pty", "concurrent.futures.process"}  # and os calls:
PROCESS_CALLS = re.compile(r"^os\.(system|popen|exec\w*|spawn\w*|posix_spawn\w*|fork\w*)$|^asyncio\.create_subprocess_")
DEV_MODULE_NAME = re.compile(rf"^-?m?\s*({'|'.join(DEV_TOOLING)})(\.\w+)*$")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def process_starts_and_dev_names(file: Path) -> list[str]:
    problems = []
    tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    for node in ast.walk(tree):
        where = f"{file.relative_to(ROOT) if file.is_relative_to(ROOT) else file.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            starters = [m for m in mods if m in PROCESS_MODULES or m.split(".")[0] in PROCESS_MODULES]
            problems += [f"{where} imports {m}" for m in starters]
        elif isinstance(node, ast.Call) and PROCESS_CALLS.match(_dotted(node.func)):
            problems.append(f"{where} calls {_dotted(node.func)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DEV_MODULE_NAME.match(node.value):
            problems.append(f"{where} names dev tooling {node.value!r}")
    return problems


def test_the_product_starts_no_process_and_names_no_dev_package_as_a_module() -> None:
    """Import-linter sees imports; a subprocess (``python -m emulator``) or ``import_module("devtools")``
    it would not, so the product may neither start processes nor spell a dev package as a module name."""
    files = [f for top in PRODUCT for f in python_files(top)]
    assert len(files) > 20
    assert [p for f in files for p in process_starts_and_dev_names(f)] == []


def test_the_process_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import subprocess, sys, importlib, os\n"
        "subprocess.Popen([sys.executable, '-m', 'emulator'])\n"
        "importlib.import_module('devtools.demo')\n"
        "os.execv('x', ['bench'])\n",
        encoding="utf-8",
    )
    found = process_starts_and_dev_names(sample)
    assert sorted(p.split(" ", 1)[1] for p in found) == [
        "calls os.execv",
        "imports subprocess",
        "names dev tooling 'bench'",
        "names dev tooling 'devtools.demo'",
        "names dev tooling 'emulator'",
    ]


# ---- every import is declared --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("top", "allowed"),
    [
        ("function_app.py", "app"),
        ("handlers", "app"),
        ("shared", "app"),
        ("labguard", "runtime"),
        ("devtools", "dev"),
        ("emulator", "dev"),
        ("bench", "dev"),
        ("tests", "dev"),
    ],
)
def test_every_third_party_import_is_declared(top: str, allowed: str) -> None:
    """The Function App's modules import only what requirements.txt installs in Azure; the CLI only the
    package's dependencies; dev tooling and tests only those plus the ``dev`` extra."""
    files = python_files(top)
    local = {f.stem for f in files}  # tests' helper modules (unit_support, infra_support...) are local
    modules = third_party(imported_modules(files), local)
    assert modules, f"{top} imports nothing third-party? the walk is broken"
    declared = {
        "app": set(APP_PINS),
        "runtime": set(RUNTIME),
        "dev": set(RUNTIME) | set(DEV),
    }[allowed]
    undeclared = {m: distribution_of(m) for m in sorted(modules) if distribution_of(m) not in declared}
    assert undeclared == {}


# Dev dependencies that are run (checkers) or loaded by pytest (plugins, stubs), never imported by our code.
RUN_NOT_IMPORTED = {"ruff", "mypy", "import-linter", "pytest-asyncio", "pytest-timeout", "types-pyyaml"}


def test_every_declared_dependency_is_imported_where_it_is_declared() -> None:
    """No pin nothing imports: the Function App imports each requirements.txt pin, the command the rest of the
    dependencies, and dev tooling or the tests each ``dev`` pin (save the tools that are run, not imported)."""

    def used_by(*tops: str) -> set[str]:
        files = [f for top in tops for f in python_files(top)]
        return {distribution_of(m) for m in third_party(imported_modules(files), {f.stem for f in files})}

    app = used_by("function_app.py", "handlers", "shared")
    assert set(APP_PINS) - app == set(), "requirements.txt pins what the Function App does not import"
    assert set(RUNTIME) - set(APP_PINS) - used_by("labguard") == set(), "a CLI dependency the command does not import"
    dev = used_by("devtools", "emulator", "bench", "tests")
    assert set(DEV) - dev - RUN_NOT_IMPORTED == set(), "a dev pin nothing under devtools/emulator/bench/tests imports"
    assert set(DEV) >= RUN_NOT_IMPORTED


def test_declared_distributions_resolve() -> None:
    """The walk maps namespace packages to the right distribution (a wrong map would pass anything)."""
    assert distribution_of("azure.mgmt.labservices.aio") == "azure-mgmt-labservices"
    assert distribution_of("azure.data.tables") == "azure-data-tables"
    assert distribution_of("jwt") == "pyjwt"
    assert distribution_of("yaml") == "pyyaml"


# ---- requirements files agree with pyproject -----------------------------------------------------


def test_requirements_txt_pins_exactly_the_apps_share_of_the_dependencies() -> None:
    """requirements.txt is what Azure installs: every entry is a dependency, pinned inside pyproject's range;
    what pyproject adds is only the CLI's (imported by labguard/, never by the Function App)."""
    for name, pin in APP_PINS.items():
        assert name in RUNTIME, f"{name} is in requirements.txt but not in pyproject's dependencies"
        (spec,) = pin.specifier
        assert spec.operator == "==", f"requirements.txt pins exactly: {pin}"
        assert RUNTIME[name].specifier.contains(spec.version), f"{pin} is outside pyproject's {RUNTIME[name]}"
    cli_only = set(RUNTIME) - set(APP_PINS)
    app_imports = third_party(imported_modules([f for top in PRODUCT if top != "labguard" for f in python_files(top)]))
    assert cli_only == {"typer", "rich"}
    assert cli_only.isdisjoint(distribution_of(m) for m in app_imports)


def test_requirements_dev_pins_the_cli_and_the_dev_extra() -> None:
    assert (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").count("-r requirements.txt") == 1
    assert set(DEV_PINS) == (set(RUNTIME) - set(APP_PINS)) | set(DEV)
    for name, pin in DEV_PINS.items():
        (spec,) = pin.specifier
        wanted = DEV[name] if name in DEV else RUNTIME[name]
        assert spec.operator == "==" and wanted.specifier.contains(spec.version), f"{pin} vs pyproject {wanted}"


def test_the_package_installs_only_the_product() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    rooms = {f"shared.{room.name}" for room in (ROOT / "shared").iterdir() if (room / "__init__.py").exists()}
    assert set(setuptools["packages"]) == {"shared", *rooms, "handlers", "labguard"}
    assert setuptools["py-modules"] == ["function_app"]
    roots = set(PYPROJECT["tool"]["importlinter"]["root_packages"])
    assert {"shared", "handlers", "labguard", *DEV_TOOLING} <= roots  # so the product contract can be checked


# ---- what the Function App ships -----------------------------------------------------------------


def funcignore_patterns() -> list[str]:
    lines = (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    # The matcher below implements bare-name patterns only; anything else would need the real rules.
    assert all("/" not in p and not p.startswith("!") for p in patterns), patterns
    return patterns


def shipped(files: list[str]) -> list[str]:
    """gitignore semantics for bare-name patterns: a file is left out if any part of its path matches."""
    patterns = funcignore_patterns()
    return [f for f in files if not any(fnmatch.fnmatchcase(part, p) for part in f.split("/") for p in patterns)]


def test_funcignore_ships_only_what_the_function_app_runs() -> None:
    ships = shipped(tracked_files())
    assert {f.split("/")[0] for f in ships} == FUNCTION_APP_SHIPS


def test_what_ships_imports_nothing_left_behind() -> None:
    """Every first-party module the shipped code imports is itself shipped."""
    ships = shipped(tracked_files())
    modules = imported_modules([ROOT / f for f in ships if f.endswith(".py")])
    first_party = {m for m in modules if m.split(".")[0] in FIRST_PARTY}
    assert first_party
    shipped_modules = {f.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for f in ships}
    assert {m for m in first_party if m not in shipped_modules} == set()


def test_the_funcignore_check_would_see_a_leak() -> None:
    assert shipped(["labguard/cli.py", "devtools/demo.py", "shared/edge/arm.py", "docs/x.md"]) == ["shared/edge/arm.py"]
