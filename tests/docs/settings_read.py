"""The names of the settings Kindler's code reads from its environment."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.docs.pages import ROOT

PYTHON_FOLDERS = ("kindler", "clusters", "config")
# The test settings read the development settings that pick how the suite runs.
PYTHON_FILES = ("tests/settings.py",)
SHELL_FOLDERS = ("scripts",)
COMPOSE_FOLDER = "compose"
ENV_METHODS = {"str", "bool", "int", "float", "list", "json", "dict", "tuple", "path", "url"}
# Read by the scripts, but the shell's and the system's own, not Kindler settings.
SHELL_STANDARD = {"HOME", "PATH", "PWD", "UID", "EUID", "BASH_SOURCE", "DEBIAN_FRONTEND"}

SHELL_VARIABLE = re.compile(r"\$\{?(?P<name>[A-Z][A-Z0-9_]*)")
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Z][A-Z0-9_]*)")
ASSIGNED = re.compile(r"(?:^|[\s;(])(?:local\s+|export\s+)?(?P<name>[A-Z][A-Z0-9_]*)=")


def python_files() -> list[Path]:
    found = [path for folder in PYTHON_FOLDERS for path in (ROOT / folder).rglob("*.py")]
    return sorted([*found, *(ROOT / name for name in PYTHON_FILES)])


def constants(tree: ast.Module) -> dict[str, str]:
    """Return the module-level NAME = "string" assignments of a module."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


def is_environ(node: ast.expr) -> bool:
    """Return whether node is os.environ."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def reads_environment(func: ast.expr) -> bool:
    """Return whether a call of func reads the variable its first argument names."""
    if isinstance(func, ast.Name):
        return func.id == "read_secret"
    if not isinstance(func, ast.Attribute):
        return False
    owner = func.value
    if is_environ(owner):
        return func.attr == "get"
    if isinstance(owner, ast.Name):
        # environ: the mapping kindler.webserver.build() reads (os.environ by default).
        return (owner.id, func.attr) in (("os", "getenv"), ("environ", "get")) or (
            owner.id == "env" and func.attr in ENV_METHODS
        )
    return False


def reads_environment_second(func: ast.expr) -> bool:
    """Return whether a call of func reads the variable its second argument names."""
    # kindler.webserver.whole_number(environ, NAME, default)
    return isinstance(func, ast.Name) and func.id == "whole_number"


def read_names(tree: ast.Module, resolve: dict[str, dict[str, str]], module: str) -> set[str]:
    """Return the setting names one module reads."""
    local = resolve.get(module, {})

    def value(node: ast.expr) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return local.get(node.id, "")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return resolve.get(node.value.id, {}).get(node.attr, "")
        return ""

    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            names.add(value(node.slice) if is_environ(node.value) else "")
        if not isinstance(node, ast.Call) or not node.args:
            continue
        if reads_environment(node.func):
            names.add(value(node.args[0]))
            if isinstance(node.func, ast.Name):  # read_secret: NAME or NAME_FILE
                names.add(f"{value(node.args[0])}_FILE")
        if reads_environment_second(node.func) and len(node.args) >= 2:
            names.add(value(node.args[1]))
        on_settings = isinstance(node.func, ast.Name) and node.func.id == "getattr"
        if on_settings and len(node.args) >= 2:
            target = node.args[0]
            if isinstance(target, ast.Name) and target.id == "settings":
                names.add(value(node.args[1]))
    return {name for name in names if name and name != "_FILE"}


def python_settings() -> dict[str, set[str]]:
    """Return every setting name read by the Python code, with the files that read it."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in python_files()}
    resolve = {path.stem: constants(tree) for path, tree in trees.items()}
    found: dict[str, set[str]] = {}
    for path, tree in trees.items():
        for name in read_names(tree, resolve, path.stem):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def shell_settings() -> dict[str, set[str]]:
    """Return the variables the scripts read and never set themselves."""
    found: dict[str, set[str]] = {}
    for folder in SHELL_FOLDERS:
        for path in sorted((ROOT / folder).iterdir()):
            if not path.is_file():
                continue
            text = path.read_text()
            code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
            assigned = {match["name"] for match in ASSIGNED.finditer(code)}
            for match in SHELL_VARIABLE.finditer(code):
                name = match["name"]
                if name not in assigned and name not in SHELL_STANDARD:
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def compose_settings() -> dict[str, set[str]]:
    """Return the ${VARIABLES} the compose files take from their environment."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / COMPOSE_FOLDER).rglob("*.yml")):
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        for match in COMPOSE_VARIABLE.finditer(code):
            found.setdefault(match["name"], set()).add(str(path.relative_to(ROOT)))
    return found


def settings_read() -> dict[str, set[str]]:
    """Return every setting name the code reads, with the files that read it."""
    found: dict[str, set[str]] = {}
    for part in (python_settings(), shell_settings(), compose_settings()):
        for name, files in part.items():
            found.setdefault(name, set()).update(files)
    return found
