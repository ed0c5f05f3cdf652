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
import importlib.util
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
    spec = importlib.util.spec_from_file_location(f"jaxconv_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


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
        runs = module.get_runs(file_variant) if hasattr(module, "get_runs") else {path.stem: {}}
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
    """Every run's overrides name config keys and parse (each run's), and the first run's config is valid:
    a --set mistake is one line before anything runs, not the same failure once per run."""
    from jaxconv.train.config import ConfigError, apply_overrides, load_config, validate

    for index, run in enumerate(planned):
        try:
            config = apply_overrides(load_config(run.experiment), dict(run.overrides))
            if index == 0:
                validate(config, device_count=1)
        except ConfigError as e:
            given = next((f"--set {key}={overrides[key]}: " for key in overrides if key in str(e)), "")
            raise SweepError(f"{given}run {run.name!r}: {e}") from None


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


def slurm_array(planned: Sequence[PlannedRun], *, job_name: str = "jaxconv-sweep", python: str = "python",
                sbatch_options: Sequence[str] = ()) -> str:
    """An sbatch script running ``planned`` as one array job, one task per run."""
    if not planned:
        raise SweepError("nothing to run")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{len(planned) - 1}",
        "#SBATCH --output=%x-%A_%a.out",
        *(f"#SBATCH {option}" for option in sbatch_options),
        "# Generated by scripts/sweep.py. Each task trains one run; resubmitting resumes unfinished ones.",
        "set -euo pipefail",
        "RUNS=(",
        *(f"  {shlex.quote(run.command(python))}" for run in planned),
        ")",
        'eval "${RUNS[$SLURM_ARRAY_TASK_ID]}"',
    ]
    return "\n".join(lines) + "\n"
