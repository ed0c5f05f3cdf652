"""The `jaxconv` command. Thin: it parses arguments and calls the library.

User mistakes (an unknown model, an image size the network cannot take, a bad flag, a package
missing from the environment) end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Sequence

from jaxconv.errors import RunFailure, UserError
from jaxconv.user_modules import ENV_VAR, env_specs, import_modules, merge

EXIT_USAGE = 2
EXIT_FAILURE = 1
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


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


def _missing_dependency(error: ModuleNotFoundError, argv: Sequence[str]) -> str | None:
    """One line for a dependency missing from the environment, or None for any other import error."""
    top = (error.name or "").partition(".")[0]
    if top not in _PIP_NAMES:
        return None
    return (f"{' '.join(['jaxconv', *argv])}: needs the Python package {top!r}, which is not installed in this "
            f"environment ({sys.executable}); pip install {_PIP_NAMES[top]}, or pip install jaxconv for all of them")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + error
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    if value > _LARGEST:
        raise argparse.ArgumentTypeError(f"{value} is too large (at most {_LARGEST:,})")
    return value


_LARGEST = 2**31 - 1  # sizes and counts become int32 array dimensions


def _image_size(text: str) -> int | tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    sizes = tuple(_positive_int(p) for p in parts)
    return sizes[0] if len(sizes) == 1 else sizes  # type: ignore[return-value]


def cmd_summary(args: argparse.Namespace) -> int:
    from jaxconv.analysis import format_summary, summary
    from jaxconv.layers import GeometryError
    from jaxconv.models import model_info

    info = model_info(args.model)
    size = args.image_size or info.image_size
    try:
        result = summary(
            args.model,
            image_size=size,
            batch_size=args.batch_size,
            in_channels=args.in_channels,
            num_classes=args.num_classes,
            dtype=args.dtype,
        )
    except GeometryError as e:
        size_text = size if isinstance(size, int) else "x".join(map(str, size))
        raise UsageError(
            f"{args.model} cannot take {size_text} px inputs: {e} (its default size is {info.image_size})"
        ) from None
    sys.stdout.write(format_summary(result, args.format))
    return 0


def registry_rows(pattern: str = "*", summarize=None) -> list[dict]:
    """Name, family, parameters, GMACs and default size of every registered model.

    ``summarize(name)`` defaults to ``jaxconv.summary`` at the model's defaults.
    """
    from jaxconv.analysis import summary
    from jaxconv.models import list_models, model_info

    summarize = summarize or summary
    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        s = summarize(name)
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": s.params,
                "gmacs": round(s.macs / 1e9, 3),
                "image_size": info.image_size,
                "num_classes": info.num_classes,
                "description": info.description,
            }
        )
    return rows


def registry_markdown(rows: list[dict]) -> str:
    lines = ["| model | params | GMACs | input | classes | description |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['gmacs']:.3f} | {r['image_size']} | {r['num_classes']} "
            f"| {r['description']} |"
        )
    return "\n".join(lines) + "\n"


def cmd_list(args: argparse.Namespace) -> int:
    from jaxconv.models import list_models

    if not list_models(args.pattern):
        raise UsageError(f"no model matches {args.pattern!r}; `jaxconv list` shows them all")
    rows = registry_rows(args.pattern)
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif args.format == "md":
        sys.stdout.write(registry_markdown(rows))
    else:
        width = max(len(r["name"]) for r in rows)
        sys.stdout.write(f"{'model'.ljust(width)}  {'params':>12}  {'GMACs':>7}  {'input':>5}  description\n")
        for r in rows:
            sys.stdout.write(
                f"{r['name'].ljust(width)}  {r['params']:>12,}  {r['gmacs']:>7.3f}  {r['image_size']:>5}  "
                f"{r['description']}\n"
            )
    return 0


def _quiet_backends() -> None:
    """Keeps TensorFlow's C++ logging and TFDS's progress bars out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow only decodes and augments images here; its oneDNN notice is noise to the user.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import logging
    import warnings

    import absl.logging
    import tensorflow_datasets as tfds

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    # Orbax logs each failed write of a save with its traceback (hundreds of lines for one full disk);
    # jaxconv reports every checkpoint failure itself, in one line, from the exception Orbax raises.
    logging.getLogger("absl").addFilter(_not_from_orbax)
    tfds.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


def _not_from_orbax(record) -> bool:
    return f"{os.sep}orbax{os.sep}" not in (record.pathname or "")


def _ignore_late_storage_callbacks() -> None:
    """After a failed checkpoint write, TensorStore completes the save's outstanding writes into the
    asyncio loop Orbax has already closed; each prints a `RuntimeError: Event loop is closed` traceback
    (through sys.excepthook or sys.unraisablehook, depending on the thread). The failure itself is
    reported, in one line, from the exception Orbax raises."""
    import logging
    import traceback

    def late(value, tb) -> bool:
        frames = traceback.extract_tb(tb)
        return (isinstance(value, RuntimeError) and str(value) == "Event loop is closed" and bool(frames)
                and frames[0].name == "call_soon_threadsafe")

    previous_hook, previous_unraisable = sys.excepthook, sys.unraisablehook

    def hook(kind, value, tb):
        if not late(value, tb):
            previous_hook(kind, value, tb)

    def unraisable_hook(unraisable):
        if not late(unraisable.exc_value, unraisable.exc_traceback):
            previous_unraisable(unraisable)

    sys.excepthook, sys.unraisablehook = hook, unraisable_hook
    # ... and asyncio logs the same failed writes again ("exception was never retrieved"); jaxconv itself
    # runs no asyncio code.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


_LOG_ENABLED = True  # off on every process but the first of a multi-process run


def _log(message: str) -> None:
    if _LOG_ENABLED:
        print(message, file=sys.stderr, flush=True)


# XLA's CPU backend (jaxlib 0.10) hands convolutions to YNNPACK, where the weight-gradient
# convolutions of a training step run 4-7x slower than on XLA's own (Eigen) convolutions:
# 1.5-1.7x on a whole ResNet training step, 1.4x on inference (docs/benchmarks.md). The flag
# only concerns computations on the CPU backend; GPU and TPU hosts are unaffected.
DEFAULT_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def apply_default_xla_flags() -> None:
    """Adds DEFAULT_XLA_FLAGS to $XLA_FLAGS before JAX starts; a flag the user set wins.

    JAXCONV_XLA_DEFAULTS=0 leaves XLA_FLAGS alone. Does nothing once JAX is imported (XLA
    reads the variable when it starts, and a caller that imported JAX chose its flags).
    """
    if os.environ.get("JAXCONV_XLA_DEFAULTS", "1") == "0" or "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in DEFAULT_XLA_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags


# glibc's malloc hands XLA:CPU's large per-step buffers (a ResNet-50 step at batch 8 has 1.3 GB
# of temporaries) to fresh mmaps or to thread-arena heaps it gives back after the step, so every
# step faults them in again, page by page. JAXCONV_MALLOC_TUNING=1 asks for one arena that
# neither maps nor trims, so the buffers are reused: ResNet-50 training on 2 cores ran
# 1.2-1.3x faster. It is not the default because memory freed at the top of that one heap is
# never given back: EfficientNet-B0 at batch 32 peaked at 16.5 GB of RSS against 8.5 without,
# and tf.data's decoding threads, sharing the arena, ran ~12% slower (docs/benchmarks.md).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
MALLOC_TUNING = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim (mallopt(3))


def apply_malloc_tuning() -> bool:
    """Sets MALLOC_TUNING with mallopt(3) when JAXCONV_MALLOC_TUNING=1; True if it did.

    Only on glibc, only before JAX and TensorFlow start their threads (the arena limit binds
    threads created later), and never over the user's own malloc settings (MALLOC_* variables,
    glibc.malloc tunables).
    """
    if os.environ.get("JAXCONV_MALLOC_TUNING", "0") != "1" or "jax" in sys.modules or "tensorflow" in sys.modules:
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return all(libc.mallopt(option, value) == 1 for option, value in MALLOC_TUNING)
    except (OSError, AttributeError):
        return False


def _enable_compilation_cache() -> None:
    """Keeps compiled steps in JAX's persistent cache, so that a resumed or repeated run skips compiling.

    The cache is $JAX_COMPILATION_CACHE_DIR when set, else ~/.cache/jaxconv/xla
    (under $XDG_CACHE_HOME when set); JAXCONV_COMPILATION_CACHE=0 turns it off.
    """
    if os.environ.get("JAXCONV_COMPILATION_CACHE", "1") == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    cache_home = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    jax.config.update("jax_compilation_cache_dir", str(cache_home / "jaxconv" / "xla"))


def _start_processes(args: argparse.Namespace) -> None:
    """Joins a multi-process run when launched as one (flags, JAXCONV_* variables, SLURM, TPU pod)."""
    global _LOG_ENABLED
    import jax

    from jaxconv.parallel import LaunchError, initialize_distributed

    try:
        launch = initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                        heartbeat_timeout=args.heartbeat_timeout)
    except LaunchError as e:
        raise UsageError(str(e)) from None
    _LOG_ENABLED = jax.process_index() == 0
    if jax.process_count() > 1:
        _log(f"multi-process run: {launch}")


def default_experiment() -> pathlib.Path | None:
    """experiments/default.py of the working directory, or of the checkout jaxconv runs from."""
    for root in (pathlib.Path.cwd(), REPO_ROOT):
        candidate = root / "experiments" / "default.py"
        if candidate.is_file():
            return candidate
    return None


def _config_overrides(extra: list[str]) -> dict[str, str]:
    """--config.KEY=VALUE and --config.KEY VALUE arguments."""
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            raise UsageError(f"unrecognised argument {arg!r} (config values are given as --config.KEY=VALUE)")
        key = arg[len("--config."):]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(extra):
            i += 1
            value = extra[i]
        else:
            raise UsageError(f"{arg} needs a value (--config.KEY=VALUE)")
        overrides[key] = value
        i += 1
    return overrides


def _stored_config(workdir: pathlib.Path):
    """A run's own config.json as a ConfigDict; one line when it is missing or damaged."""
    import ml_collections

    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise UsageError(f"--workdir {workdir}: no config.json there (is it a `jaxconv train` workdir?)")
    try:
        stored = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{config_path}: unreadable ({e}); the run's config is damaged") from None
    if not isinstance(stored, dict):
        raise UsageError(f"{config_path}: holds a {type(stored).__name__}, not a config; the run's config is damaged")
    return ml_collections.ConfigDict(stored)


def _resolved_config(source, overrides: dict[str, str], imports: Sequence[str] = ()):
    """The validated config of an experiment file (or base config, or a stored ConfigDict) with overrides.

    ``imports`` (what --import brought in) go first in ``config.imports``, which the run records.
    """
    import jax
    import ml_collections

    from jaxconv.train.config import ConfigError, apply_overrides, base_config, load_config, validate

    try:
        if isinstance(source, ml_collections.ConfigDict):
            config = source
        else:
            config = load_config(source) if source is not None else base_config()
        config = apply_overrides(config, overrides)
        if imports:
            config.imports = tuple(merge(imports, config.get("imports", ())))
        return validate(config, device_count=jax.device_count(), process_count=jax.process_count())
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _terminated(signum, frame):
    """SIGTERM before the run has installed its own handler: nothing has been written yet, so stop now.
    (Raising here instead could land in a callback of JAX's garbage collector, which swallows it.)"""
    _log("SIGTERM while starting, before anything was written: stopped; run the same command to start")
    os._exit(0)


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    import signal

    signal.signal(signal.SIGTERM, _terminated)  # until the run installs its own handler (train.signals.stop_signals)
    try:
        return _train_command(args, extra)
    finally:  # the run is over: a SIGTERM now would only turn its exit status into 143
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _train_command(args: argparse.Namespace, extra: list[str]) -> int:
    _quiet_backends()
    from jaxconv.train.loop import TrainingDiverged, train
    from jaxconv.train.workdir import RunWriteError

    _ignore_late_storage_callbacks()
    overrides = _config_overrides(extra)
    allow_changes = _allowed_changes(args.allow_change)
    _enable_compilation_cache()
    _start_processes(args)
    imported = import_modules(args.imports)
    from jaxconv.train.config import split_variant

    if args.config is None and args.workdir and (pathlib.Path(args.workdir) / "config.json").is_file():
        # `jaxconv train --workdir RUN`: resume the run as it was configured (its own imports included)
        workdir = pathlib.Path(args.workdir)
        config = _resolved_config(_stored_config(workdir), overrides, imported)
        _log(f"resuming {workdir.absolute()} with its config.json")
    else:
        path, variant = split_variant(args.config) if args.config else (default_experiment(), None)
        if path is not None and not path.is_file():
            raise UsageError(f"--config {args.config}: no such experiment file (see experiments/)")
        config = _resolved_config(args.config or path, overrides, imported)
        name = (path.stem + (f"_{variant}" if variant else "")) if path is not None else "default"
        workdir = pathlib.Path(args.workdir or pathlib.Path("runs") / name)
        _log(f"experiment {path or 'base config'} -> workdir {workdir.absolute()}")
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir {workdir}: exists and is not a directory")
    try:
        summary = train(config, workdir, log=_log, allow_changes=allow_changes)
    except TrainingDiverged as e:
        _log(f"jaxconv: training stopped: {e}; the last good checkpoint is kept in {workdir / 'checkpoints'}")
        return EXIT_FAILURE
    except RunWriteError as e:  # a checkpoint, metrics.jsonl, config.json, ...
        print(f"jaxconv: training stopped: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if _LOG_ENABLED:
        print(format_train_summary(summary))
    return 0


def _allowed_changes(values: Sequence[str]) -> frozenset[str]:
    """--allow-change KEY[,KEY...] (repeatable), or 'all': config keys a resume may change."""
    from jaxconv.train.config import base_config

    known = set(base_config().keys())
    keys = {key.strip() for value in values for key in value.split(",") if key.strip()}
    for key in sorted(keys):
        if key != "all" and key.partition(".")[0] not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(f"--allow-change {key}: not a config key; {hint}give config keys "
                             f"(e.g. batch_size,learning_rate) or 'all'")
    return frozenset(keys)


def format_train_summary(summary: dict) -> str:
    lines = [f"{summary.get('status', 'completed')}: {summary.get('model')} on {summary.get('dataset')}, "
             f"{summary.get('steps')} steps ({summary.get('epochs', 0):.2f} epochs) "
             f"in {summary.get('wall_time_s', 0) / 60:.1f} min"]
    final = summary.get("final_eval")
    if final:
        lines.append(f"  final eval: top-1 {100 * final['top1']:.2f}%  top-5 {100 * final['top5']:.2f}%  "
                     f"loss {final['loss']:.4f}  ({final['examples']} examples)")
    best = summary.get("best_eval")
    if best:
        lines.append(f"  best eval:  top-1 {100 * best['top1']:.2f}% at step {best['step']}")
    for key in ("workdir", "checkpoints", "metrics"):
        if key in summary:
            lines.append(f"  {key}: {summary[key]}")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    _quiet_backends()
    import jax

    from jaxconv.train.config import ConfigError, validate
    from jaxconv.train.evaluate import evaluate_checkpoint

    _enable_compilation_cache()
    workdir = pathlib.Path(args.workdir)
    stored = _stored_config(workdir)
    devices = jax.device_count()
    if isinstance(stored.get("eval_batch_size"), int) and stored.eval_batch_size > 0:  # fit this machine's devices
        stored.eval_batch_size = -(-stored.eval_batch_size // devices) * devices
    try:
        config = validate(stored, device_count=devices, process_count=jax.process_count())
    except ConfigError as e:
        raise UsageError(f"{workdir / 'config.json'}: {e}") from None
    try:
        result = evaluate_checkpoint(config, workdir, step=args.step, split=args.split, ten_crop=args.ten_crop,
                                     log=_log)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"step {result['step']} on {result['split']}{' (10 crops)' if result['ten_crop'] else ''}: "
              f"top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  loss {result['loss']:.4f}  "
              f"({result['examples']} examples)")
    return 0


def _speed_measure(args: argparse.Namespace):
    """measure(model, mode, batch_size, image_size) -> images/s, timed with `jaxconv bench`'s code."""
    from jaxconv import bench

    def measure(name: str, mode: str, batch_size: int, image_size: int) -> float:
        _log(f"timing {name} ({mode}, batch {batch_size}, {image_size} px)")
        timer = bench.measure_train if mode == "train" else bench.measure_eval
        return timer(name, batch_size=batch_size, image_size=image_size, steps=args.steps, warmup=1)["images_per_sec"]

    return measure


def cmd_compare(args: argparse.Namespace) -> int:
    from jaxconv.analysis import summary
    from jaxconv.compare import ILSVRC_MODELS, compare_rows, find_runs, format_rows
    from jaxconv.compare import plots
    from jaxconv.layers import GeometryError
    from jaxconv.models import model_info

    models = args.models or list(ILSVRC_MODELS)
    for name in models:
        model_info(name)
    runs = find_runs(args.runs) if args.runs else []
    out = pathlib.Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    device = None
    if args.speed:
        _quiet_backends()
        _enable_compilation_cache()
        import jax

        device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})"
    try:
        rows = compare_rows(models, runs=runs, measure=_speed_measure(args) if args.speed else None,
                            batch_size=args.batch_size, image_size=args.image_size)
    except GeometryError as e:
        raise UsageError(f"--image-size {args.image_size}: {e}") from None
    text = format_rows(rows, args.format, device=device)
    sys.stdout.write(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for fmt in ("md", "csv", "json"):
            (out / f"compare.{fmt}").write_text(format_rows(rows, fmt, device=device), encoding="utf-8")
        written = [out / "compare.md", out / "compare.csv", out / "compare.json"]
        written.append(plots.plot_accuracy_vs_gmacs(rows, out / "accuracy_vs_gmacs.png"))
        written.append(plots.plot_accuracy_vs_gmacs(rows, out / "your_accuracy_vs_gmacs.png", accuracy="your"))
        written.append(plots.plot_layer_profile(summary("vgg16"), out / "vgg16_layers.png"))
        _log("wrote " + ", ".join(str(p) for p in written if p is not None))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _quiet_backends()
    from jaxconv.compare import find_runs
    from jaxconv.compare.report import write_report

    runs = find_runs(args.runs)
    for run in runs:
        for note in run.notes:
            print(f"jaxconv: note: {note}", file=sys.stderr)
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    command = "jaxconv report " + " ".join(args.runs) + f" --out {args.out}"
    with _output_directory(out):
        path = write_report(runs, out, title=args.title, command=command)
    print(path)
    return 0


@contextlib.contextmanager
def _output_directory(out: pathlib.Path):
    """--out DIR: created first (one line when it cannot be), and removed again if the command fails
    before finishing, when this command created it: nothing half-written is left behind."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".jaxconv_write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    try:
        yield
    except OSError as e:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise UsageError(f"--out {out}: writing failed ({e.strerror or e}){'; removed it' if created else ''}") from None
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def cmd_bench(args: argparse.Namespace) -> int:
    if args.mode == "data":
        _quiet_backends()
    else:  # no TensorFlow to quieten (or to wait for while it imports)
        import warnings

        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
    _enable_compilation_cache()
    from jaxconv import bench

    request = bench.Request(args.model, args.mode, args.batch_size, args.image_size, args.dtype, args.steps,
                            args.warmup, recipe=args.recipe)
    if args.mode == "layers":
        _log(f"timing the convolutions of {args.model} one by one ...")
    elif args.mode != "data":
        _log(f"compiling the {args.model} {args.mode} step ...")
    result = bench.run(request)
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.format == "json" else bench.format_text(result))
    return 0


def _choices(flag: str, text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each one of ``allowed``."""
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise UsageError(f"{flag} {text!r}: expected a comma-separated list of {', '.join(allowed)}")
    return items


def cmd_export(args: argparse.Namespace) -> int:
    _quiet_backends()
    from jaxconv import export

    if bool(args.workdir) == bool(args.weights):
        raise UsageError("give either --workdir RUN (a training run's checkpoint) or --model NAME --weights FILE_OR_TAG")
    if args.weights and not args.model:
        raise UsageError(f"--weights {args.weights} needs --model NAME (the jaxconv model the weights are for)")
    if args.workdir and (args.model or args.image_size):
        raise UsageError("--model and --image-size come from the run's config.json with --workdir; drop them")
    if args.step and not args.workdir:
        raise UsageError("--step selects a checkpoint of --workdir")
    formats = _choices("--format", args.format, export.FORMATS)
    platforms = _choices("--platforms", args.platforms, export.PLATFORMS)
    out = pathlib.Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty directory; choose a new one")
    with _output_directory(out):
        record, metadata = _export(args, export, out, formats, platforms)
    folded = f"{record['batchnorm_folded']} BatchNorms folded" if record["batchnorm_folded"] else "no BatchNorm folded"
    print(f"exported {metadata['model']} ({folded}, {record['dtype']}) to {out}: images "
          f"{tuple(record['input']['shape'])} float32 -> logits (N, {metadata['num_classes']}) float32")
    for kind, name in record["files"].items():
        error = record.get("max_relative_error", {}).get(kind)
        check = f"  max |export - JAX| / max |JAX| = {error:.2g}" if error is not None else ""
        print(f"  {out / name}{check}")
    return 0


def _export(args, export, out: pathlib.Path, formats, platforms) -> tuple[dict, dict]:
    from jaxconv.models import model_info

    try:
        if args.workdir:
            model, variables, shape, metadata = export.from_run(args.workdir, args.step)
        else:
            model_info(args.model)
            model, variables, shape, metadata = export.from_weights(args.model, args.weights, args.image_size)
        shape = (args.batch_size or shape[0], *shape[1:])
        record = export.export_model(model, variables, out, input_shape=shape, fold_bn=args.fold_bn,
                                     dtype=args.dtype, formats=formats, platforms=platforms,
                                     dynamic_batch=args.batch_size is None, metadata=metadata, check=args.check)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        raise UsageError(str(e).strip("'\"")) from None
    return record, metadata


def cmd_predict(args: argparse.Namespace) -> int:
    _quiet_backends()
    from jaxconv.pretrained import convert, predict, weights
    from jaxconv.models import model_info

    model_info(args.model)
    published = weights.weight_sets(args.model)
    if model_info(args.model).torchvision is None:
        raise UsageError(f"--model {args.model}: no ImageNet weights convert to it; models with weights: "
                         f"{', '.join(weights.WEIGHTS)}")
    path = pathlib.Path(args.weights).expanduser()
    is_tag = args.weights in published and not path.exists()
    if not is_tag and not path.is_file():
        raise UsageError(f"--weights {args.weights}: neither a file nor a published tag of {args.model} "
                         f"({', '.join(published)})")
    if args.weights_tag is not None and args.weights_tag not in published:
        raise UsageError(f"--weights-tag {args.weights_tag}: {args.model}'s published weights are "
                         f"{', '.join(published)}")
    if is_tag and args.weights_tag not in (None, args.weights):
        raise UsageError("--weights-tag is for a --weights file; a published tag brings its own preprocessing")
    tag = args.weights if is_tag else (args.weights_tag or next(iter(published)))
    weight_set = published[tag]
    try:
        if is_tag:
            path = weights.fetch(args.model, tag, args.weights_dir, download=not args.no_download)
        model, variables = convert.load_pretrained(args.model, path)
    except (OSError, ValueError) as e:  # not found, hash, mismatch, unreadable file
        raise UsageError(str(e)) from None

    results, skipped = [], 0
    for item in predict.predict_files(args.inputs, model, variables, weight_set.preprocessing, top_k=args.top,
                                      batch_size=args.batch_size):
        if isinstance(item, predict.Skipped):
            skipped += 1
            print(f"jaxconv: skipped {item.reason}", file=sys.stderr)
            continue
        results.append(item)
        if args.format == "text":
            print(item.file)
            for index, label, probability in item.top:
                print(f"  {100 * probability:6.2f}%  {label} ({index})")
    if args.format == "json":
        pre = weight_set.preprocessing
        print(json.dumps({
            "model": args.model,
            "weights": str(path),
            "preprocessing": {"tag": tag, "resize": pre.resize, "crop": pre.crop,
                              "interpolation": pre.interpolation, "mean": pre.mean, "std": pre.std},
            "results": [r.as_dict() for r in results],
            "skipped": skipped,
        }, indent=2))
    if not results:
        raise UsageError(f"none of the {skipped} input(s) is an image that could be read")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxconv", description="Convolutional networks in JAX/Flax.",
                     epilog=f"Every command takes --import MODULE_OR_FILE (repeatable; also ${ENV_VAR}, "
                            f"separated by '{os.pathsep}' or ','): your own models and blocks, registered with "
                            "jaxconv.register when imported. See docs/extending.md.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help=f"import your module or .py file first (its models become known); repeatable; "
                             f"also ${ENV_VAR}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("summary", parents=[common], help="per-layer shapes, parameters, MACs, activations, receptive fields")
    p.add_argument("model", help="a registered model name (see `jaxconv list`)")
    p.add_argument("--image-size", type=_image_size, help="N or HxW (default: the model's own)")
    p.add_argument("--batch-size", type=_positive_int, default=1, help="for shapes and the memory estimate")
    p.add_argument("--in-channels", type=_positive_int, help="input channels (default: the model's own)")
    p.add_argument("--num-classes", type=_positive_int, help="classifier size (default: the model's own)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--format", choices=("table", "md", "csv", "json"), default="table")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", parents=[common], help="train an experiment (default: experiments/default.py); resumes a workdir")
    p.add_argument("--config", help="an experiment file defining get_config() (default: experiments/default.py)")
    p.add_argument("--workdir", help="where checkpoints, metrics and the summary go (default: runs/<experiment>)")
    p.add_argument("--allow-change", action="append", default=[], metavar="KEY[,KEY...]",
                   help="on resume, continue with new values of these config keys (or 'all') although they change "
                        "what the run is (batch size, learning rate, seed, ...); recorded in config_changes.jsonl")
    launch = p.add_argument_group("multi-process runs (SLURM `srun` and Cloud TPU pods are detected by themselves)")
    launch.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (or JAXCONV_COORDINATOR)")
    launch.add_argument("--num-processes", type=_positive_int, metavar="N", help="or JAXCONV_NUM_PROCESSES")
    launch.add_argument("--process-id", type=int, metavar="K", help="0..N-1 (or JAXCONV_PROCESS_ID)")
    launch.add_argument("--heartbeat-timeout", type=_positive_int, default=100, metavar="SECONDS",
                        help="stop with an error when another process has been silent this long (default 100)")
    p.epilog = "Any config value can be overridden with --config.KEY=VALUE, e.g. --config.num_train_steps=100."
    p.set_defaults(func=cmd_train, takes_extra=True)

    p = sub.add_parser("eval", parents=[common], help="evaluate a training run's latest (or given) checkpoint")
    p.add_argument("--workdir", required=True, help="a `jaxconv train` workdir")
    p.add_argument("--step", type=_positive_int, help="the checkpoint's step (default: the latest)")
    p.add_argument("--split", help="the split to evaluate (default: the dataset's evaluation split)")
    p.add_argument("--ten-crop", action="store_true", help="AlexNet's 10-crop evaluation (softmax averaged)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_eval, takes_extra=True)

    p = sub.add_parser("list", parents=[common], help="every registered model with parameters, GMACs and default input size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "md", "json"), default="table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", parents=[common], help="export a run's checkpoint or pretrained weights for inference "
                                      "(TensorFlow SavedModel, StableHLO)")
    p.add_argument("--out", required=True, help="a new (or empty) directory for the export")
    p.add_argument("--workdir", help="a `jaxconv train` workdir: its latest (or --step) checkpoint")
    p.add_argument("--step", type=_positive_int, help="the checkpoint's step (default: the latest)")
    p.add_argument("--model", help="a registered model name, with --weights")
    p.add_argument("--weights", help="a torchvision .pth/.safetensors file or a published tag (IMAGENET1K_V1)")
    p.add_argument("--image-size", type=_positive_int, help="input size (default: the weights' crop size)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weights and compute")
    p.add_argument("--no-fold-bn", dest="fold_bn", action="store_false", help="keep BatchNorm layers as they are")
    p.add_argument("--format", default="saved_model,jax_export", help="saved_model and/or jax_export")
    p.add_argument("--platforms", default="cpu,cuda,tpu", help="where the export may run: cpu, cuda, rocm, tpu")
    p.add_argument("--batch-size", type=_positive_int, help="a fixed batch size (default: any)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip running the export against the JAX model on two random images")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", parents=[common], help="top-k ImageNet classes of images with pretrained weights")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")
    p.add_argument("--model", default="resnet50", help="a model with ImageNet weights (default resnet50)")
    p.add_argument("--weights", required=True, metavar="TAG_OR_FILE",
                   help="a published tag (IMAGENET1K_V2) or a torchvision .pth/.safetensors file")
    p.add_argument("--weights-tag", metavar="TAG", help="with a file: whose preprocessing to use "
                                                          "(default: the model's first published tag)")
    p.add_argument("--weights-dir", help="where published weights are kept "
                                         "(default $JAXCONV_WEIGHTS_DIR or ~/.cache/jaxconv/weights)")
    p.add_argument("--no-download", action="store_true", help="never download; say what to download instead")
    p.add_argument("--top", type=_positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", parents=[common], help="the ILSVRC architectures side by side: params, GMACs, memory, speed, accuracy")
    p.add_argument("models", nargs="*", help="registered names (default: alexnet zfnet vgg16 vgg19 googlenet "
                                             "resnet18..152 efficientnet_b0)")
    p.add_argument("--format", choices=("md", "csv", "json"), default="md")
    p.add_argument("--out", help="also write compare.md/.csv/.json and the plots (PNG) into this directory")
    p.add_argument("--runs", nargs="+", metavar="DIR", help="training workdirs (or their parents) whose best "
                                                             "evaluation fills the 'your top-1' columns")
    p.add_argument("--no-speed", dest="speed", action="store_false",
                   help="skip timing inference and training on this device (static figures only)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="batch for the timings (default 8)")
    p.add_argument("--steps", type=_positive_int, default=5, help="timed steps per measurement (default 5)")
    p.add_argument("--image-size", type=_positive_int, help="one input size for all (default: each model's own)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", parents=[common], help="gather training runs into one markdown report with tables and plots")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training workdirs, or directories holding them")
    p.add_argument("--out", default="report", help="directory for report.md and its plots (default: report/)")
    p.add_argument("--title", default="jaxconv report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", parents=[common], help="training / inference / input-pipeline throughput, compile time, FLOP/s, MFU")
    p.add_argument("model", help="a registered model name (see `jaxconv list`)")
    p.add_argument("--mode", choices=("train", "eval", "data", "layers"), default="train",
                   help="train step, eval (forward) step, the input pipeline alone, or each convolution "
                        "alone (forward, input and kernel gradient; --steps timings each) (default train)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="global batch (default 128)")
    p.add_argument("--image-size", type=_positive_int, help="input size (default: the model's own)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--steps", type=_positive_int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling (default 3)")
    p.add_argument("--recipe", choices=("imagenet", "cifar"),
                   help="--mode data: JPEG + Inception crop, or 32 px PNG + pad-and-crop "
                        "(default: imagenet for inputs of 64 px and more)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    apply_default_xla_flags()
    apply_malloc_tuning()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        args.imports = merge(env_specs(), args.imports)
        if args.command != "train":  # train imports them once the processes of a multi-process run have met
            args.imports = import_modules(args.imports)
        if getattr(args, "takes_extra", False):
            return args.func(args, extra)
        if extra:
            raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
        return args.func(args)
    except (UsageError, UserError) as e:  # every module's user-mistake errors derive from UserError
        print(f"jaxconv: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailure as e:
        print(f"jaxconv: stopped: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except ModuleNotFoundError as e:
        message = _missing_dependency(e, argv)
        if message is None:
            raise
        print(f"jaxconv: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxconv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
