"""Sweeps: several training runs from experiment files and overrides, run in turn or as a SLURM array.

An experiment file may define ``get_runs(variant)`` -> {run name: {config key: value}} beside
``get_config(variant)``: a study such as plain vs residual networks is one file whose runs
differ by model (or any other key); a run's ``_experiment`` key trains it from another
experiment file instead. A file without ``get_runs`` is one run. Each run trains
in ``RUNS_DIR/<file stem>/<variant>/<run name>`` with `jaxconv train`, so an interrupted sweep
resumes where it stopped when started again.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shlex
import sys
from collections.abc import Mapping, Sequence

from jaxconv.errors import UserError
from jaxconv.train.config import split_variant


class SweepError(UserError, ValueError):
    """A sweep that cannot be planned: a missing file, an unknown run or variant, a bad override."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One `jaxconv train` invocation of a sweep."""

    name: str
    experiment: str  # FILE.py or FILE.py:VARIANT
    workdir: pathlib.Path
    overrides: tuple[tuple[str, str], ...]

    def argv(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", "jaxconv.cli", "train", "--config", self.experiment, "--workdir", str(self.workdir),
                *(f"--config.{key}={value}" for key, value in self.overrides)]

    def command(self, python: str = "python") -> str:
        return shlex.join(self.argv(python))


def override_text(value) -> str:
    """A config value as `--config.KEY=VALUE` spells it: (1, 2) -> '(1, 2)', None -> 'None', True -> 'true'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _module(path: pathlib.Path):
    """The experiment file as a module; a mistake in it (a SyntaxError, a failing import) is one line naming it,
    as `jaxconv train --config` says it."""
    from jaxconv.user_modules import UserModuleError, import_file

    try:
        return import_file(path, what=f"experiment file {path}", name=f"jaxconv_sweep_{path.stem}", fresh=True)
    except UserModuleError as e:
        raise SweepError(f"experiment file {path}: {str(e).split(': ', 1)[1]}") from None


def _runs_of(module, path: pathlib.Path, variant: str | None) -> dict:
    """``get_runs(variant)`` of the experiment file, checked: a dict of run name -> dict of overrides, each name
    a folder name of its own."""
    if not hasattr(module, "get_runs"):
        return {path.stem: {}}
    from jaxconv.user_modules import error_cause

    where = f"experiment file {path}" + (f":{variant}" if variant else "")
    try:
        runs = module.get_runs(variant)
    except (Exception, SystemExit) as e:  # the user's code failed: what, and on which line of their file
        raise SweepError(f"{where}: get_runs({variant!r}) failed: {error_cause(e, path)}") from None
    if not isinstance(runs, Mapping):
        raise SweepError(f"{where}: get_runs() returned a {type(runs).__name__}; it must return a dict of run name "
                         f"-> dict of config overrides, e.g. {{'lr0.1': {{'learning_rate': 0.1}}}}")
    for name, run_overrides in runs.items():
        problem = _name_problem(name)
        if problem:
            raise SweepError(f"{where}: run name {name!r} {problem}; a run's name is its workdir's folder name "
                             f"(letters, digits and . _ - + = ,)")
        if not isinstance(run_overrides, Mapping):
            raise SweepError(f"{where}: run {name!r} is a {type(run_overrides).__name__}; each run must be a dict of "
                             f"config overrides, e.g. {{'learning_rate': 0.1}}")
    return dict(runs)


def _name_problem(name) -> str | None:
    """Why ``name`` cannot be a run's folder name inside the sweep's folder; None when it can."""
    if not isinstance(name, str) or not name:
        return "is not a non-empty string"
    if name in (".", "..") or "/" in name or "\\" in name:
        return "would leave the sweep's folder" if ".." in name or "/" in name or "\\" in name else "is not a folder"
    if name.startswith("-"):
        return "starts with '-' (a command line would read it as an option)"
    if any(c.isspace() or not c.isprintable() for c in name):
        return "has a space or an unprintable character"
    return None


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (portable sbatch scripts)."""
    try:
        return str(pathlib.Path(path).resolve().relative_to(pathlib.Path.cwd().resolve()))
    except ValueError:
        return path


def plan(experiments: Sequence[str], *, runs_dir: str | pathlib.Path = "runs", variant: str | None = None,
         only: Sequence[str] = (), overrides: Mapping[str, str] | None = None) -> list[PlannedRun]:
    """The runs of ``experiments`` (files, optionally FILE.py:VARIANT), in order.

    ``variant`` applies to files given without one; ``only`` keeps the named runs;
    ``overrides`` (KEY -> text) apply to every run, after the study's own.
    """
    planned: list[PlannedRun] = []
    for given in experiments:
        path, file_variant = split_variant(given)
        file_variant = file_variant or variant
        if not path.is_file():
            raise SweepError(f"{given}: no such experiment file")
        module = _module(path)
        variants = getattr(module, "VARIANTS", None)
        if file_variant is not None and variants is not None and file_variant not in variants:
            raise SweepError(f"{given}: unknown variant {file_variant!r}; {path.name} has {', '.join(variants)}")
        if file_variant is None and variants:
            file_variant = variants[0]
        experiment = f"{path}:{file_variant}" if file_variant else str(path)
        runs = _runs_of(module, path, file_variant)
        unknown = sorted(set(only) - set(runs)) if only and len(experiments) == 1 else []
        if unknown:
            raise SweepError(f"{path.name} has no run {', '.join(map(repr, unknown))}; its runs are {', '.join(runs)}")
        base = pathlib.Path(runs_dir) / path.stem / (file_variant or "")
        for name, run_overrides in runs.items():
            if only and name not in only:
                continue
            run_overrides = dict(run_overrides)
            run_experiment = _relative(run_overrides.pop("_experiment", experiment))  # a run on another recipe
            pairs = {key: override_text(value) for key, value in run_overrides.items()}
            swept = sorted(set(pairs) & set(overrides or {}))
            if swept:  # it would make the study's runs the same run under different names
                raise SweepError(f"--set {swept[0]}={overrides[swept[0]]}: {path.name} sets {swept[0]} itself "
                                 f"(run {name!r}: {pairs[swept[0]]}); leave it out, or pick runs with --only")
            pairs.update(overrides or {})
            planned.append(PlannedRun(name, run_experiment, base / name, tuple(pairs.items())))
    unknown = sorted(set(only) - {r.name for r in planned})
    if unknown:  # (one file: said above, with its runs)
        raise SweepError(f"--only {' '.join(unknown)}: no such run in {', '.join(experiments)}")
    names = [str(r.workdir) for r in planned]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(f"two runs would share a workdir: {', '.join(duplicates)}")
    _check_overrides(planned, overrides or {})
    return planned


def _check_overrides(planned: Sequence[PlannedRun], overrides: Mapping[str, str]) -> None:
    """Every run's config, with its overrides, is valid (no data is read): a --set mistake is one line before
    anything runs, not the same failure once per run -- nor a failure of the fifth run after four have trained
    (a --set that suits the first run's model and not a later one's)."""
    from jaxconv.train.config import ConfigError, apply_overrides, load_config, validate

    for run in planned:
        try:
            validate(apply_overrides(load_config(run.experiment), dict(run.overrides)), device_count=1)
        except ConfigError as e:
            given = next((f"--set {key}={overrides[key]}: " for key in overrides
                          if key in str(e) or repr(key.rpartition('.')[2]) in str(e)), "")
            raise SweepError(f"{given}run {run.name!r}: {e}") from None


def run_configs(planned: Sequence[PlannedRun]) -> list[dict]:
    """The configs the runs will train with (as config.json holds them, before `jaxconv train` fills in
    what it derives)."""
    from jaxconv.train.config import apply_overrides, load_config

    return [apply_overrides(load_config(run.experiment), dict(run.overrides)).to_dict() for run in planned]


def changed_settings(run: PlannedRun) -> str:
    """What ``run``'s overrides set that the config.json of its (finished) workdir holds otherwise, as
    'key=old (now new)'; '' when nothing, or when there is no readable config.json."""
    import json

    from jaxconv.train.config import apply_overrides, load_config
    from jaxconv.train.resume import config_changes

    try:
        stored = json.loads((run.workdir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(stored, dict):
        return ""
    changes = config_changes(stored, apply_overrides(load_config(run.experiment), dict(run.overrides)))
    keys = [key for key, _ in run.overrides if key in changes]
    return ", ".join(f"{key}={changes[key][0]!r} (now {changes[key][1]!r})" for key in keys)


SLURM_MARK = "# Generated by scripts/sweep.py. Each task trains one run; resubmitting resumes unfinished ones."


def is_sweep_script(path: pathlib.Path) -> bool:
    """Whether ``path`` is an sbatch script this module wrote (a new one may replace it)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("#!/bin/bash\n#SBATCH --job-name=") and SLURM_MARK in head


def slurm_array(planned: Sequence[PlannedRun], *, job_name: str = "jaxconv-sweep", python: str = "python",
                sbatch_options: Sequence[str] = (), directory: str | pathlib.Path | None = None) -> str:
    """An sbatch script running ``planned`` as one array job, one task per run, from ``directory`` (default:
    the working directory, from which the runs' relative paths were planned)."""
    if not planned:
        raise SweepError("nothing to run")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{len(planned) - 1}",
        "#SBATCH --output=%x-%A_%a.out",
        "#SBATCH --open-mode=append",  # a requeued or resubmitted task adds to its log instead of replacing it
        *(f"#SBATCH {option}" for option in sbatch_options),
        SLURM_MARK,
        "set -euo pipefail",
        f"cd {shlex.quote(str(pathlib.Path(directory or pathlib.Path.cwd()).resolve()))}"
        "  # where the sweep was planned: the runs' paths are relative to it",
        "RUNS=(",
        *(f"  {shlex.quote(run.command(python))}" for run in planned),
        ")",
        'eval "${RUNS[$SLURM_ARRAY_TASK_ID]}"',
    ]
    return "\n".join(lines) + "\n"
