"""Reading what `jaxconv train` left in its workdirs: config.json, metrics.jsonl, summary.json."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxconv.errors import UserError
from jaxconv.train.workdir import best_rank, read_records


class RunError(UserError, ValueError):
    """A path that is not a readable training run (no metrics.jsonl or config.json, bad JSON)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One training workdir. ``train`` and ``evals`` are the metrics.jsonl records in step order."""

    path: pathlib.Path
    config: dict
    train: tuple[dict, ...]
    evals: tuple[dict, ...]
    summary: dict | None
    notes: tuple[str, ...] = ()  # what was odd about its files (a torn last line), for the reader to see

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> str:
        return self.config.get("model", "?")

    @property
    def dataset(self) -> str:
        return self.config.get("dataset", "?")

    @property
    def completed(self) -> bool:
        return bool(self.summary) and self.summary.get("status") == "completed"

    @property
    def best_eval(self) -> dict | None:
        """The evaluation with the highest top-1 (ties: the latest, the one whose checkpoint is kept)."""
        return max(self.evals, key=lambda r: best_rank(r["top1"], r["step"])) if self.evals else None

    @property
    def final_eval(self) -> dict | None:
        return self.evals[-1] if self.evals else None

    def _ended(self, key: str) -> int | float | None:
        """``key`` of the summary of a run that ended (completed or diverged: a diverged run's records stop at its
        last finite window); None for one that may go on (a preempted run's summary is its last session's)."""
        summary = self.summary or {}
        value = summary.get(key)
        if summary.get("status") in ("completed", "diverged") and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            return value
        return None

    @property
    def steps(self) -> int:
        """The steps the run trained: an ended run's summary's, else its last record's."""
        if isinstance(self._ended("steps"), int):
            return self._ended("steps")
        last = [r["step"] for r in self.train + self.evals]
        return max(last) if last else 0

    @property
    def epochs(self) -> float | None:
        """The epochs the run trained: an ended run's summary's, else its last evaluation's or training record's."""
        if self._ended("epochs") is not None:
            return float(self._ended("epochs"))
        final = self.final_eval
        return final["epoch"] if final and "epoch" in final else (self.train[-1].get("epoch") if self.train else None)

    @property
    def wall_time_s(self) -> float | None:
        """The run's wall time over every session, as its summary.json records it (None without one)."""
        return self.summary.get("wall_time_s") if self.summary else None


def _records(path: pathlib.Path) -> tuple[list[dict], tuple[str, ...]]:
    records, bad = read_records(path)
    lines = sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())
    notes = []
    for number, _ in bad:
        if number < lines:
            raise RunError(f"{path}:{number}: not a JSON object, as every metrics record is") from None
        # A run killed while writing leaves at most a torn last line; its next session sets it aside.
        notes.append(f"{path}:{number}: the last line is cut short (a run killed while writing it); read without it")
    return records, tuple(notes)


def load_run(path: str | pathlib.Path) -> Run:
    """Reads one workdir; raises RunError when it is not one."""
    path = pathlib.Path(path)
    metrics, config = path / "metrics.jsonl", path / "config.json"
    if not path.is_dir():
        raise RunError(f"{path}: {'not a directory' if path.exists() else 'no such directory'}")
    if not metrics.is_file() or not config.is_file():
        raise RunError(f"{path}: not a training run (a `jaxconv train` workdir has config.json and metrics.jsonl)")
    try:
        config_dict = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{config}: unreadable ({e})") from None
    if not isinstance(config_dict, dict):
        raise RunError(f"{config}: holds a {type(config_dict).__name__}, not a config")
    try:
        records, notes = _records(metrics)
    except OSError as e:
        raise RunError(f"{metrics}: unreadable ({e.strerror or e})") from None
    summary_path, summary = path / "summary.json", None
    if summary_path.is_file():  # the closing summary is a convenience: a damaged one is noted, not fatal
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            notes += (f"{summary_path}: unreadable ({e}); read as a run without its summary",)
        if not isinstance(summary, dict):
            summary = None
    steps = (summary or {}).get("steps")
    if not records and isinstance(steps, int) and steps > 0:  # emptied or replaced: its table row would say 0 steps
        notes += (f"{metrics}: empty, though its summary.json says the run trained {steps} steps; read without "
                  f"curves or evaluations",)
    usable = [r for r in records if _usable(r)]
    if len(usable) < len(records):
        notes += (f"{metrics}: {len(records) - len(usable)} record(s) without an integer step, or a train/eval "
                  f"record without a numeric loss and a top-1 fraction (0 to 1); read without them",)
    # A resumed run re-logs the steps after its checkpoint: keep the last record of each step.
    by_key = {(r.get("split"), r["step"]): r for r in usable}
    ordered = sorted(by_key.values(), key=lambda r: r["step"])
    train = tuple(r for r in ordered if r.get("split") == "train")
    evals = tuple(r for r in ordered if r.get("split") == "eval")
    return Run(path, config_dict, train, evals, summary, notes)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _usable(record: dict) -> bool:
    """What a report can read: an integer step, and a train or eval record's loss and top-1 as numbers."""
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return False
    top1 = record.get("top1")
    return record.get("split") not in ("train", "eval") or (_number(record.get("loss")) and _number(top1)
                                                            and 0 <= top1 <= 1)  # a fraction; NaN fails too


def find_runs(paths: Iterable[str | pathlib.Path], *, left_out: list[str] | None = None) -> list[Run]:
    """The runs at ``paths``: each a workdir, or a directory whose subdirectories (to any depth) are.

    Raises RunError for a path that holds no run at all, or for a damaged run given by its own path; a
    damaged run found below a given directory is named in ``left_out``, when given, with the reason (one
    run's damaged file failed the report of all the others), else raises too.
    """
    found: dict[pathlib.Path, tuple[pathlib.Path, bool]] = {}  # each run once, however many paths reach it
    for given in paths:
        root = pathlib.Path(given)
        if not root.is_dir():
            raise RunError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}")
        if (root / "metrics.jsonl").is_file():
            found[root.resolve()] = (root, True)
            continue
        below = sorted(p.parent for p in root.rglob("metrics.jsonl") if (p.parent / "config.json").is_file())
        if not below:
            raise RunError(f"{root}: holds no training run (no config.json + metrics.jsonl below it)")
        for path in below:
            found.setdefault(path.resolve(), (path, False))
    runs = []
    for path, named in found.values():
        try:
            runs.append(load_run(path))
        except RunError as e:
            if named or left_out is None:
                raise
            left_out.append(f"left out {path}: {e}")
    if not runs:
        raise RunError(f"no readable run in {', '.join(map(str, paths))}: {'; '.join(left_out or [])}")
    return runs


# -- repeats and settings ---------------------------------------------------------------------------

def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    values = {}
    for key, value in config.items():
        if isinstance(value, dict):  # an empty one (no model_options) sets nothing
            values.update(_flatten(value, f"{prefix}{key}."))
        else:
            values[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return values


# Bookkeeping keys that change what is trained (when a NaN rolls the run back): part of the setting.
_TRAINING_KEYS = {"nan_policy", "max_rollbacks", "rollback_lr_factor"}


def setting(run: Run) -> dict[str, Any]:
    """What defines the run's experiment: its flattened config without the seed, the keys that cannot change
    the weights it trains (how often it logs, evaluates and saves) or where its data lives. Runs of one
    setting differ in their seed alone."""
    return config_setting(run.config)


def config_setting(config: Mapping[str, Any]) -> dict[str, Any]:
    """``setting`` of a run's config (a dict as config.json holds it): also of a run not trained yet."""
    from jaxconv.train.keys import KEYS

    bookkeeping = {key.name for key in KEYS if key.group == "bookkeeping"} - _TRAINING_KEYS | {"data_dir"}
    # A key an older jaxconv did not write (auto_augment) has its default: the run ran with it.
    values = {key.name: key.default for key in KEYS if not isinstance(key.default, dict)}
    values = _flatten(values) | _flatten(dict(config))
    return {k: v for k, v in values.items() if k not in bookkeeping}


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """The setting keys whose value is not the same in every run, in sorted order."""
    return differing_config_keys([run.config for run in runs])


def differing_config_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """``differing_keys`` of runs' configs (also of a sweep's runs before they train)."""
    settings = [config_setting(config) for config in configs]
    keys = sorted({k for s in settings for k in s})
    return [k for k in keys if len({repr(s.get(k, DEFAULT)) for s in settings}) > 1]  # unset != set to None


def x_axis_problem(x: str, keys: Sequence[str]) -> str | None:
    """Why ``x`` cannot be the axis of `jaxconv report --x` for runs that differ in ``keys``; None when it can."""
    if x in keys:
        return None
    differ = f"they differ in: {', '.join(keys)}" if keys else "they differ in nothing but their seeds"
    if x == "seed":  # not a setting: what repeats one
        return (f"a run's seed repeats its setting (each setting's seeds are drawn together, with their spread), "
                f"so it is not an axis; {differ}")
    return f"the runs do not differ in {x!r}; {differ}"


def repeats(runs: Sequence[Run]) -> list[tuple[Run, ...]]:
    """The runs grouped by setting (runs that differ only in their seed together), in first-seen order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(repr(sorted(setting(run).items())), []).append(run)
    return [tuple(group) for group in groups.values()]


def group_name(group: Sequence[Run]) -> str:
    """What to call a setting's runs: its first run's name, without a ``_seed<N>`` suffix naming that run's seed
    when the group holds several seeds (a sweep's 'dropout0.5_seed1' and 'dropout0.5_seed2': 'dropout0.5')."""
    first = group[0]
    setting = first.name.removesuffix(f"_seed{first.config.get('seed', 0)}")
    return setting if len(group) > 1 and setting else first.name


DEFAULT = "default"  # a key the run's config leaves unset (a model option it does not pass)


def setting_values(run: Run, keys: Sequence[str]) -> list[str]:
    """The run's values of ``keys`` as text. A model option its config leaves unset reads as the
    model's own default ('None' for AlexNet's norm, 'BatchNorm' for ResNet's) where that is a plain value
    or a named module and the model is registered here; otherwise, and for other unset keys, 'default'."""
    values = setting(run)
    return [str(values[k]) if k in values else _model_default(values.get("model"), k) for k in keys]


def _model_default(model: Any, key: str) -> str:
    from jaxconv.registry import UnknownModelError, model_info

    option = key.removeprefix("model_options.")
    if option == key or not isinstance(model, str):
        return DEFAULT
    try:
        value = model_info(model).option_default(option)
    except (UnknownModelError, KeyError, TypeError):
        return DEFAULT
    if value is None or isinstance(value, (bool, int, float, str, tuple)):
        return f"{value} (default)"
    name = getattr(value, "__name__", None) or getattr(getattr(value, "func", None), "__name__", None)
    return f"{name} (default)" if isinstance(name, str) else DEFAULT  # a module, e.g. ResNet's BatchNorm


def setting_label(run: Run, keys: Sequence[str]) -> str:
    """``model=plain20, learning_rate=0.5``: the run's values of ``keys`` (its name when there are none)."""
    return ", ".join(f"{k}={v}" for k, v in zip(keys, setting_values(run, keys))) if keys else run.name


def run_cost(run: Run) -> dict | str:
    """Parameters and GMACs of the run's model at its input size and class count, from the model's code as
    it is now; or why they are not shown (the code cannot be imported or built, or it has changed since the
    run: its summary.json records the parameters it trained)."""
    from jaxconv.analysis import summary
    from jaxconv.data.catalog import DATASETS
    from jaxconv.errors import UserError
    from jaxconv.user_modules import import_run_modules

    try:
        import_run_modules(run.config, where=str(run.path))
        spec = DATASETS.get(run.dataset)
        num_classes = spec.num_classes if spec and spec.num_classes else _recorded_classes(run)
        options = dict(run.config.get("model_options") or {})
        s = summary(run.model, image_size=run.config.get("image_size"), num_classes=num_classes, **options)
    except (UserError, ValueError, TypeError) as e:
        return f"{run.model} could not be built ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    trained = (run.summary or {}).get("params")
    if isinstance(trained, int) and trained != s.params:
        return (f"{run.model} now has {s.params:,} parameters where the run trained {trained:,}: its code "
                f"changed since")
    return {"params": s.params, "gmacs": s.macs / 1e9}


def _recorded_classes(run: Run) -> int | None:
    """A folder dataset's class count, as the run recorded it when it started (WORKDIR/dataset.json)."""
    from jaxconv.train.resume import recorded_dataset

    classes = (recorded_dataset(run.path) or {}).get("classes")
    return len(classes) if isinstance(classes, list) and classes else None
