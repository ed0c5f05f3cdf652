"""Evaluation: a state over a whole split, a run's checkpoint (`jaxconv eval`), a run's best result."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections

from jaxconv.checkpoint import Checkpoints
from jaxconv.errors import UserError
from jaxconv.data import pipeline
from jaxconv.train.experiment import Experiment, abstract_state, build
from jaxconv.train.report import Progress
from jaxconv.train.steps import eval_step
from jaxconv.train.resume import check_dataset
from jaxconv.train.workdir import best_rank, read_records


class UnknownSplit(UserError, ValueError):
    """A split the dataset does not have."""


def evaluate(exp: Experiment, state, *, ten_crop: bool = False, limit: int | None = None,
             compiled: Callable | None = None, progress: Progress | None = None) -> dict:
    """Loss, top-1/top-5 accuracy and error over every example of the evaluation split, exactly once."""
    dataset, steps = pipeline.eval_dataset(
        exp.sources["eval"],
        exp.preprocess,
        global_batch=exp.config.eval_batch_size,
        ten_crop=ten_crop,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        limit=limit,
    )
    step_fn = compiled or exp.parallel.compile(partial(eval_step, options=exp.options), donate_state=False,
                                               returns_state=False)
    totals = None
    for i, batch in enumerate(pipeline.numpy_batches(dataset)):
        metrics = step_fn(state, exp.parallel.shard_batch(batch))
        totals = metrics if totals is None else jax.tree_util.tree_map(jnp.add, totals, metrics)
        if progress is not None:
            progress.eval_tick(i + 1, steps)
    totals = exp.parallel.first(totals)
    count = float(totals["count"])
    result = {
        "loss": float(totals["loss"]) / count,
        "top1": float(totals["top1"]) / count,
        "top5": float(totals["top5"]) / count,
        "examples": int(round(count)),
    }
    result["error1"], result["error5"] = 1 - result["top1"], 1 - result["top5"]
    return result


def best_eval(workdir: pathlib.Path) -> dict | None:
    """The best evaluation top-1 recorded in WORKDIR/metrics.jsonl, over every (resumed) session."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    records, _ = read_records(path)
    evals = [r for r in records if r.get("split") == "eval" and isinstance(r.get("top1"), (int, float))]
    if not evals:
        return None
    top = max(evals, key=lambda r: best_rank(r["top1"], r["step"]))  # the rule the kept checkpoints follow
    return {"top1": top["top1"], "step": top["step"]}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, step: int | None = None,
                        split: str | None = None, ten_crop: bool | None = None,
                        log: Callable[[str], None] = print) -> dict:
    """Evaluates the latest (or given) checkpoint of ``workdir`` on the eval (or given) split, with 10 crops when
    ``ten_crop`` (None: as the run evaluated, ``config.ten_crop``)."""
    ten_crop = bool(config.ten_crop) if ten_crop is None else ten_crop
    exp = build(config, log=log)
    check_dataset(pathlib.Path(workdir), exp.sources, log, what="an evaluation")
    if split is not None and split != exp.spec.eval_split:
        exp = _with_split(exp, split)
    # Read-only: an evaluation moves and cleans nothing, so it is safe beside a run that is still training.
    checkpoints = Checkpoints(workdir, read_only=True, log=log)
    try:
        checkpoints.available(step)
        state, _, step = checkpoints.restore_available(abstract_state(exp), step=step)
    finally:
        checkpoints.close()
    result = evaluate(exp, exp.parallel.replicate(state), ten_crop=ten_crop)
    return {"step": step, "split": split or exp.spec.eval_split, "ten_crop": ten_crop, **result}


def _with_split(exp: Experiment, split: str) -> Experiment:
    from jaxconv.data.folder import folder_splits
    from jaxconv.data.sources import TFDSSource, tfds_builder

    config = exp.config
    if config.dataset == "folder":
        sources = folder_splits(config.folder)
        if split not in sources:
            raise UnknownSplit(f"the folder dataset has splits {', '.join(sources)}, not {split!r}")
        return dataclasses.replace(exp, sources={**exp.sources, "eval": sources[split]})
    builder = tfds_builder(exp.spec, config.data_dir, image_size=config.image_size,
                           shapes_examples=(config.shapes_train_examples, config.shapes_test_examples))
    if split not in builder.info.splits:
        raise UnknownSplit(f"{config.dataset} has splits {', '.join(builder.info.splits)}, not {split!r}")
    return dataclasses.replace(exp, sources={**exp.sources, "eval": TFDSSource(builder, split, exp.spec)})


__all__ = ["UnknownSplit", "best_eval", "evaluate", "evaluate_checkpoint"]
