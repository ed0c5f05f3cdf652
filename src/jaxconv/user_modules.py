"""Users' own code in every command: ``--import MODULE_OR_FILE``, $JAXCONV_IMPORT, and what a run records.

A user's module registers models (``jaxconv.register``) or blocks when it is imported. Every
``jaxconv`` command imports the modules named by ``--import`` (repeatable) and by
$JAXCONV_IMPORT (separated by ``os.pathsep`` or commas) before it looks a model up; a training
run records them in its config (``config.imports``), so that ``eval``, ``report``, ``export``
and a resume of that run import them again from the workdir alone.

A spec is a module name (``my_blocks``, ``lab.models.resnext``), found on ``sys.path`` and in
the working directory, or a Python file (``path/to/my_blocks.py``), whose folder becomes
importable so that its own ``import sibling`` lines work. A run records a module that is not
installed as its file (a top-level one) or as ``NAME@ROOT`` (a module of a package in the folder
ROOT), so that it is found again from anywhere. Importing runs the code: import only code you
trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import pathlib
import sys
import sysconfig
import traceback
from collections.abc import Iterable, Sequence
from types import ModuleType

from jaxconv.errors import UserError

ENV_VAR = "JAXCONV_IMPORT"


class UserModuleError(UserError, ImportError):
    """A user's module that could not be imported; the message is one line naming it and the error."""


def env_specs(environ: dict[str, str] | None = None) -> list[str]:
    """The specs in $JAXCONV_IMPORT, in order."""
    text = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [part.strip() for chunk in text.split(os.pathsep) for part in chunk.split(",") if part.strip()]


def is_file_spec(spec: str) -> bool:
    """A path to a .py file (or anything with a path separator) rather than a module name (or NAME@ROOT)."""
    head = spec.partition("@")[0]
    return spec.endswith(".py") or "/" in head or os.sep in head


def error_cause(error: BaseException, in_file: str | pathlib.Path | None = None) -> str:
    """'SyntaxError: invalid syntax (my_blocks.py, line 3)' -- the error, where in the user's code it arose
    (the innermost line of ``in_file`` when given and on the way, else the innermost line)."""
    if isinstance(error, SyntaxError):
        where = f" ({pathlib.Path(error.filename or '?').name}, line {error.lineno})" if error.lineno else ""
        return f"SyntaxError: {error.msg}{where}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "importlib" not in f.filename]
    if in_file is not None:
        frames = [f for f in frames if pathlib.Path(f.filename).resolve() == pathlib.Path(in_file).resolve()] or frames
    where = f" ({pathlib.Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message}{where}".replace(": (", " (")


def _already_imported(path: pathlib.Path) -> ModuleType | None:
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and os.path.basename(file) == path.name and pathlib.Path(file).resolve() == path:
            return module
    return None


def _add_to_path(folder: pathlib.Path) -> None:
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _prints_to_stderr() -> contextlib.AbstractContextManager:
    """What a user's module prints while it is imported goes to stderr: stdout is the commands' output
    (`--format json`, a table), which a "loading my nets..." line would corrupt."""
    return contextlib.redirect_stdout(sys.stderr)


def import_file(path: str | pathlib.Path, *, what: str | None = None, name: str | None = None,
                fresh: bool = False) -> ModuleType:
    """Imports a Python file as a module (once: a file imported before, by name or path, is reused).

    Its folder is put on ``sys.path`` first, so that the file can import its neighbours. The
    module is named ``name``, else after the file when that name is free, so that a later
    ``import my_blocks`` finds this same module instead of running the file a second time.
    ``fresh`` runs the file again even when it was imported before (an experiment file).
    """
    given = str(path)
    what = what or given
    path = pathlib.Path(given).expanduser()
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "no such file"
        raise UserModuleError(f"{what}: {problem} (give a .py file or a module name)")
    path = path.resolve()
    module = None if fresh else _already_imported(path)
    if module is not None:
        return module
    _add_to_path(path.parent)
    if name is None:
        name = path.stem
        if not name.isidentifier() or name in sys.modules:
            tag = hashlib.sha256(str(path).encode()).hexdigest()[:10]
            name = f"jaxconv_user_{tag}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserModuleError(f"{what}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    module.__jaxconv_file__ = str(path)  # how a run records it: by its file
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses (Flax modules) look their module up while the file runs
    try:
        with _prints_to_stderr():
            spec.loader.exec_module(module)
    except BaseException as e:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserModuleError(f"{what}: importing it failed: {error_cause(e, path)}{_hint(e, path)}") from e
    return module


def _hint(error: BaseException, path: pathlib.Path) -> str:
    """What a file that failed to import is likely to need: to be imported as a module of its package, or
    another name than the package it shadows."""
    if isinstance(error, ImportError) and "no known parent package" in str(error):
        package = [path.stem]
        folder = path.parent
        while (folder / "__init__.py").is_file():
            package.insert(0, folder.name)
            folder = folder.parent
        if len(package) > 1:
            return f"; it is a module of the package {package[0]}: give it as --import {'.'.join(package)}, from {folder}"
        return "; a file with relative imports is a module of a package: give it as --import PACKAGE.MODULE"
    if f"'{path.stem}'" in str(error) and path.stem.isidentifier():
        elsewhere = [entry for entry in sys.path if entry and pathlib.Path(entry).resolve() != path.parent]
        if importlib.machinery.PathFinder.find_spec(path.stem, elsewhere) is not None:
            return f"; the file's name shadows the installed package {path.stem!r}: rename it"
    return ""


def import_name(name: str, *, what: str | None = None) -> ModuleType:
    """Imports a module by name, looking in the working directory too (as ``python -m`` does).

    ``NAME@ROOT`` (how a run records a module of a package that is not installed) looks in the
    folder ROOT first.
    """
    what = what or name
    name, _, root = name.partition("@")
    if not all(part.isidentifier() for part in name.split(".")):
        raise UserModuleError(f"{what}: not a module name or a .py file")
    _add_to_path(pathlib.Path.cwd())
    if root:
        _add_to_path(pathlib.Path(root))
    try:
        with _prints_to_stderr():
            return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            where = f"{pathlib.Path.cwd()}" + (f" or {root}" if root else "")
            raise UserModuleError(
                f"{what}: no module named {e.name!r} on the Python path or in {where} "
                f"(give the file's path, e.g. --import path/to/{name.rsplit('.', 1)[-1]}.py)") from e
        raise UserModuleError(f"{what}: importing it failed: {error_cause(e)}") from e
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- any error in the user's code is reported in one line
        raise UserModuleError(f"{what}: importing it failed: {error_cause(e)}") from e


def import_one(spec: str, *, what: str | None = None) -> ModuleType:
    """Imports one spec, a module name or a .py file."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserModuleError(f"{what or 'import'} {spec!r}: expected a module name or a .py file")
    spec = spec.strip()
    return import_file(spec, what=what) if is_file_spec(spec) else import_name(spec, what=what)


def import_modules(specs: Iterable[str], *, source: str = "--import") -> list[str]:
    """Imports every spec in order; returns them as a run records them (see ``recorded_spec``).

    ``source`` names where the specs came from in error messages ('--import', 'config.imports').
    """
    recorded = []
    from_env = set(env_specs()) if source == "--import" else set()
    for spec in specs:
        module = import_one(spec, what=f"{f'${ENV_VAR} entry' if spec in from_env else source} {spec}")
        record = recorded_spec(spec, module)
        if record not in recorded:
            recorded.append(record)
    return recorded


def _installed(file: str) -> bool:
    """Whether a module's file lies where a plain interpreter finds it (site-packages, the standard library)."""
    resolved = pathlib.Path(file).resolve()
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    return any(resolved.is_relative_to(pathlib.Path(root).resolve()) for root in roots)


def module_spec(module: ModuleType) -> str | None:
    """How a run records ``module`` so that any later command, from any folder, imports it again.

    A file jaxconv imported, or a top-level module that is not installed: its absolute path. A
    module of a package that is not installed: ``NAME@ROOT``. An installed module: its name.
    None for jaxconv's own modules and for ``__main__`` (a script cannot be imported again
    without running it).
    """
    name = module.__name__
    if name == "__main__" or name == "jaxconv" or name.startswith("jaxconv."):
        return None
    file = getattr(module, "__file__", None)
    if getattr(module, "__jaxconv_file__", None):
        return module.__jaxconv_file__
    if not file or _installed(file):
        return name
    path = pathlib.Path(file).resolve()
    if "." not in name and path.name != "__init__.py":
        return str(path)
    root = path.parent if path.name == "__init__.py" else path.with_suffix("")
    for _ in name.split("."):
        root = root.parent
    return f"{name}@{root}"


def recorded_spec(spec: str, module: ModuleType) -> str:
    """How a run records an import given as ``spec`` (see ``module_spec``)."""
    return module_spec(module) or spec


def source_spec(module_name: str | None, module_file: str | None) -> str | None:
    """What to import to get back a model registered by code in ``module_name`` (None: nothing to import)."""
    if not module_name:
        return None
    module = sys.modules.get(module_name)
    if module is not None:
        return module_spec(module)
    if module_name == "__main__" or module_name.startswith("jaxconv."):
        return None
    return str(pathlib.Path(module_file).resolve()) if module_file else module_name


def merge(*groups: Sequence[str]) -> list[str]:
    """The specs of every group, in order, each once."""
    merged: list[str] = []
    for group in groups:
        for spec in group:
            if spec not in merged:
                merged.append(spec)
    return merged


def import_run_modules(config: dict, where: str = "the run") -> list[str]:
    """Imports what a training run recorded in its config.json ('imports'), so that its model is known."""
    specs = config.get("imports") or ()
    if isinstance(specs, str) or not isinstance(specs, (list, tuple)):
        raise UserModuleError(f"{where}: config 'imports' is {specs!r}, not a list of modules")
    return import_modules(specs, source=f"{where} imported")
