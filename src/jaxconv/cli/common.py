"""What every command shares: exit statuses, the one-line UsageError, argument types, output folders, logging."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import pathlib
import re
import shutil
import sys
from collections.abc import Sequence

from jaxconv.errors import UserError
from jaxconv.train.workdir import disk_failure

EXIT_USAGE = 2
EXIT_FAILURE = 1
REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


class UsageError(UserError):
    """A mistake in what the user asked for; reported in one line with exit status 2."""


# The packages jaxconv's commands import, by import name: what to `pip install` when one is missing.
# `pip install jaxconv` brings them all; partial environments (a GPU image with JAX and PyTorch
# preinstalled, say) may lack some, and only the commands that need them fail.
_PIP_NAMES = {
    "tensorflow": "tensorflow-cpu (or tensorflow)",
    "tensorflow_datasets": "tensorflow-datasets",
    "tensorboard": "tensorboard",
    "ml_collections": "ml_collections",
    "orbax": "orbax-checkpoint",
    "optax": "optax",
    "flax": "flax",
    "jax": "jax",
    "safetensors": "safetensors",
    "matplotlib": "matplotlib",
    "torch": "torch (the extra: pip install 'jaxconv[torch]')",
}


def missing_dependency(error: ModuleNotFoundError, argv: Sequence[str]) -> str | None:
    """One line for a dependency missing from the environment, or None for any other import error."""
    top = (error.name or "").partition(".")[0]
    if top not in _PIP_NAMES:
        return None
    return (f"{' '.join(['jaxconv', *argv])}: needs the Python package {top!r}, which is not installed in this "
            f"environment ({sys.executable}); pip install {_PIP_NAMES[top]}, or pip install jaxconv for all of them")


def out_of_memory(error: BaseException, argv: Sequence[str]) -> str | None:
    """One line for memory exhausted (the host's, JAX's device allocator's, TensorFlow's), else None."""
    jax = sys.modules.get("jax")  # neither is imported here for this: only an error of a loaded one can occur
    tf = sys.modules.get("tensorflow")
    if isinstance(error, MemoryError):
        what = str(error)
    elif jax is not None and isinstance(error, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(error):
        what = str(error)
    elif tf is not None and isinstance(error, tf.errors.ResourceExhaustedError):
        what = str(getattr(error, "message", "") or error)
    else:
        return None
    command = argv[0] if argv else ""
    if "No space left on device" in what or "Disk quota exceeded" in what:  # TensorFlow's writers say a full disk so
        found = re.search(r"(/\S+?)[;:]? (?:No space left|Disk quota)", what)
        file = pathlib.Path(found.group(1)) if found else None
        return (f"jaxconv {command}: a file could not be written{f' ({file})' if file else ''}: "
                f"{disk_failure(error, file or pathlib.Path.cwd())}")
    first = next((line.strip() for line in what.splitlines() if line.strip()), type(error).__name__)
    if command == "train" and "IteratorGetNext" in what:  # the input pipeline: one image's view, or a batch of them
        lower = ("lower --config.batch_size or --config.image_size, or look for an image of extreme size in the "
                 "dataset; the checkpoints written so far are kept, and the same command resumes")
    elif command == "train":
        lower = ("lower --config.batch_size or --config.image_size; the checkpoints written so far are kept, "
                 "and the same command resumes")
    else:
        lower = "lower --batch-size or --image-size"
    return f"jaxconv {command} ran out of memory ({first}); {lower}"


_GIVEN = "_options_given"  # on the namespace being parsed: the values given so far, by dest


def given_twice(option: str, first: object, last: object, program: str = "jaxconv") -> None:
    """The last of two values is used, as argparse does (scripts append overrides), but not without a word."""
    print(f"{program}: note: {option} is given twice ({first!r}, then {last!r}); using the last", file=sys.stderr)


class _StoreLastSaying(argparse._StoreAction):
    """An option's value; given again with another value, the last is used and a line says so (argparse
    kept the last without a word: two --config files, two --workdirs)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault(_GIVEN, {})
        if option_string is not None and self.dest in given and given[self.dest] != values:
            given_twice(option_string, given[self.dest], values)
        given[self.dest] = values
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreLastSaying)  # add_argument without action=, or with action="store"
        self.register("action", "store", _StoreLastSaying)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        namespace.__dict__.pop(_GIVEN, None)
        return namespace, extra

    def error(self, message: str) -> None:  # one line instead of usage + error
        raise UsageError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    if value > LARGEST:
        raise argparse.ArgumentTypeError(f"{value} is too large (at most {LARGEST:,})")
    return value


LARGEST = 2**31 - 1  # sizes and counts become int32 array dimensions


def model_option(text: str) -> tuple[str, object]:
    """NAME=VALUE, the value as jaxconv.models.option_value reads it."""
    from jaxconv.models import option_value

    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. groups=2, got {text!r}")
    return name.strip(), option_value(value)


def image_size_arg(text: str) -> int | tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) > 2 or (len(parts) == 2 and not all(p.strip() for p in parts)):
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 224 or 224x192), got {text!r}")
    sizes = tuple(positive_int(p) for p in parts)
    return sizes[0] if len(sizes) == 1 else sizes  # type: ignore[return-value]


_LOG_ENABLED = True  # off on every process but the first of a multi-process run


def log(message: str) -> None:
    if _LOG_ENABLED:
        print(message, file=sys.stderr, flush=True)


def set_log_enabled(enabled: bool) -> None:
    global _LOG_ENABLED
    _LOG_ENABLED = enabled


def log_enabled() -> bool:
    return _LOG_ENABLED


def stored_config(workdir: pathlib.Path):
    """A run's own config.json as a ConfigDict; one line when it is missing or damaged."""
    import ml_collections

    from jaxconv.train.keys import RUN_DEFINING_KEYS

    config_path = workdir / "config.json"
    if not workdir.is_dir():
        raise UsageError(f"--workdir {workdir}: {'not a directory' if workdir.exists() else 'no such directory'} "
                         f"(give a `jaxconv train` workdir)")
    if not config_path.is_file():
        raise UsageError(f"--workdir {workdir}: no config.json there (is it a `jaxconv train` workdir?)")
    try:
        stored = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{config_path}: unreadable ({e}); the run's config is damaged") from None
    if not isinstance(stored, dict):
        raise UsageError(f"{config_path}: holds a {type(stored).__name__}, not a config; the run's config is damaged")
    missing = [key for key in RUN_DEFINING_KEYS if key not in stored]
    if missing:  # a default in its place would make another run of it
        raise UsageError(f"{config_path}: has no {', '.join(missing)}, which every jaxconv run records; the run's config "
                         f"is damaged (restore it, or train anew with --config FILE in another --workdir)")
    return ml_collections.ConfigDict(stored)


def check_recorded_folder(stored, workdir: pathlib.Path, command: str, overrides: dict | None = None) -> None:
    """One line for a run whose folder dataset is gone from where config.json records it, saying what helps."""
    folder = stored.get("folder")
    if stored.get("dataset") != "folder" or not isinstance(folder, str) or "folder" in (overrides or {}):
        return
    if pathlib.Path(folder).expanduser().is_dir():
        return
    where = f"{workdir / 'config.json'} records the run's images in config.folder={folder}, which is not a directory"
    if command == "eval":
        raise UsageError(f"{where} (any more): eval reads the run's evaluation images from there; put the folder "
                         f"back, or resume with `jaxconv train --workdir {workdir} --config.folder=NEW_PLACE "
                         f"--allow-change folder` if it moved")
    raise UsageError(f"{where}: if the images moved, give their new place with --config.folder=NEW_PLACE "
                     f"--allow-change folder")


def comma_choices(flag: str, text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each one of ``allowed``."""
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise UsageError(f"{flag} {text!r}: expected a comma-separated list of {', '.join(allowed)}")
    return items


@contextlib.contextmanager
def output_directory(out: pathlib.Path, *, flag: str | None = None):
    """--out DIR: created first (one line when it cannot be), and removed again if the command fails
    before finishing, with every parent folder this command created: nothing half-written is left behind.
    ``flag`` names it in the messages (default: --out DIR)."""
    flag = flag or f"--out {out}"
    top = None  # the highest folder this command creates
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        top = folder

    def remove_created() -> None:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)

    probe = out / f".jaxconv_write_test.{os.getpid()}"
    if (out.exists() or out.is_symlink()) and not out.is_dir():  # mkdir would say "File exists"
        raise UsageError(f"{flag}: cannot write there ({os.strerror(errno.ENOTDIR)})")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
    except OSError as e:
        remove_created()
        raise UsageError(f"{flag}: cannot write there ({e.strerror or e})") from None
    finally:  # a full disk lets the file be created but not written
        with contextlib.suppress(OSError):
            probe.unlink()
    try:
        yield
    except UserError:  # a mistake in the command's other inputs (some are also FileNotFoundErrors), not --out's
        remove_created()
        raise
    except Exception as e:  # OSError; or TensorFlow's SaveV2 reporting a full disk as ResourceExhaustedError
        full = any(words in str(e) for words in ("No space left on device", "Disk quota exceeded"))
        if not isinstance(e, OSError) and not full:
            remove_created()
            raise
        remove_created()
        reason = (disk_failure(e, out) if full else None) or getattr(e, "strerror", None) or str(e)
        raise UsageError(f"{flag}: writing failed ({reason}){'; removed it' if top else ''}") from None
    except BaseException:
        remove_created()
        raise
