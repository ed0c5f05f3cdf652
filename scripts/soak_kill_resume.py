#!/usr/bin/env python3
"""Soak test: kill `jaxconv train` at random moments, resume, and check nothing was lost.

    python scripts/soak_kill_resume.py --iterations 10 [--steps 300] [--seed 0] [--out soak.json]

Each iteration trains a small ResNet (16 px built-in dataset, checkpoints every 5 steps)
to the end while it is interrupted several times: SIGKILL or SIGTERM, sometimes at a random
moment and sometimes exactly while a checkpoint is being written (an Orbax temporary
directory exists). The interrupted run is restarted with the same command each time. At
the end its final parameters must equal, bit for bit, those of one uninterrupted run.
Every iteration must also log each step once in metrics.jsonl, and no interrupted run may
print a traceback. Prints one JSON object per iteration and a summary; exits 1 if any
iteration fails one of these.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

EXPERIMENT = """
import ml_collections
from jaxconv.train.config import base_config


def get_config():
    c = base_config()
    c.data_dir = {data_dir!r}
    c.image_size = 16
    c.shapes_train_examples = 512
    c.shapes_test_examples = 64
    c.batch_size = 32
    c.num_train_steps = {steps}
    c.log_every_steps = 5
    c.eval_every_steps = {steps}
    c.checkpoint_every_steps = 5
    c.learning_rate = 0.05
    c.augment = "cifar"
    c.model_options = ml_collections.ConfigDict({{"depths": (1, 1, 1)}})
    return c
"""


def launch(experiment: pathlib.Path, workdir: pathlib.Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return subprocess.Popen(
        [sys.executable, "-m", "jaxconv.cli", "train", "--config", str(experiment), "--workdir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )


def writing(workdir: pathlib.Path) -> bool:
    directory = workdir / "checkpoints"
    return directory.is_dir() and any("tmp" in p.name for p in directory.iterdir())


def final_params(workdir: pathlib.Path):
    import jax
    import numpy as np

    from jaxconv.checkpoint import Checkpoints

    checkpoints = Checkpoints(workdir, read_only=True)
    step = checkpoints.latest_step()
    restored = checkpoints.manager.restore(step)
    checkpoints.close()
    leaves = jax.tree_util.tree_leaves_with_path(restored["state"]["params"])
    return step, {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def steps_logged_once(workdir: pathlib.Path) -> bool:
    """Every (split, step) once in metrics.jsonl: the steps a resumed run redoes are not logged twice."""
    keys = [(r.get("split"), r.get("step")) for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]
    return len(keys) == len(set(keys))


def interrupted_run(experiment, workdir, rng, max_interruptions) -> list[dict]:
    events = []
    while True:
        process = launch(experiment, workdir)
        if sum(e["signal"] is None for e in events) > 3:
            raise RuntimeError(f"the run keeps ending by itself without finishing:\n{events[-1]['stderr_tail']}")
        if sum(e["signal"] is not None for e in events) >= max_interruptions:
            _, err = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"final run failed:\n{err}")
            return events
        during_write = rng.random() < 0.5
        kind = rng.choice([signal.SIGKILL, signal.SIGTERM])
        deadline = time.time() + rng.uniform(6.0, 30.0)  # startup (and compiling, unless cached) takes several seconds
        while process.poll() is None:
            if (during_write and writing(workdir)) or (not during_write and time.time() > deadline):
                break
            time.sleep(0.005)
        if process.poll() is not None:  # it ended before we struck: complete, or something went wrong
            _, err = process.communicate()
            if process.returncode == 0 and (workdir / "summary.json").exists():
                return events
            # Not a strike of ours: record it (a failure of the soak) and run the same command again.
            events.append({"signal": None, "unexpected_exit": process.returncode, "stderr_tail": err[-2000:],
                           "during_checkpoint_write": False, "exit_code": process.returncode,
                           "sigterm_saved": False, "traceback": "Traceback (most recent call last)" in err})
            continue
        hit_write = writing(workdir)
        process.send_signal(kind)
        _, err = process.communicate()
        events.append({"signal": signal.Signals(kind).name, "during_checkpoint_write": hit_write,
                       "exit_code": process.returncode,
                       "sigterm_saved": "SIGTERM: stopped at step" in err,
                       "sigterm_before_training": "SIGTERM while starting" in err or "before the first step" in err,
                       "traceback": "Traceback (most recent call last)" in err})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--interruptions", type=int, default=4, help="per iteration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = pathlib.Path(tempfile.mkdtemp(prefix="jaxconv-soak-"))
    experiment = root / "experiment.py"
    experiment.write_text(EXPERIMENT.format(data_dir=str(root / "tfds"), steps=args.steps))

    reference = launch(experiment, root / "reference")
    _, err = reference.communicate()
    if reference.returncode != 0:
        print(err, file=sys.stderr)
        return 1
    ref_step, ref_params = final_params(root / "reference")

    results = []
    for i in range(args.iterations):
        workdir = root / f"run{i}"
        started = time.time()
        events = interrupted_run(experiment, workdir, rng, args.interruptions)
        step, params = final_params(workdir)
        same = step == ref_step and params.keys() == ref_params.keys() and all(
            (params[k] == ref_params[k]).all() for k in params)
        result = {"iteration": i, "interruptions": events, "final_step": step, "identical_to_uninterrupted": bool(same),
                  "metrics_steps_once": steps_logged_once(workdir),
                  "broken_checkpoints_moved": len(list((workdir / "broken_checkpoints").glob("*")))
                  if (workdir / "broken_checkpoints").exists() else 0,
                  "seconds": round(time.time() - started, 1)}
        results.append(result)
        print(json.dumps(result), flush=True)

    kills = [e for r in results for e in r["interruptions"] if e["signal"] is not None]
    unexpected = [e for r in results for e in r["interruptions"] if e["signal"] is None]
    summary = {
        "iterations": len(results),
        "identical": sum(r["identical_to_uninterrupted"] for r in results),
        "interruptions": len(kills),
        "sigkill": sum(e["signal"] == "SIGKILL" for e in kills),
        "sigterm": sum(e["signal"] == "SIGTERM" for e in kills),
        "during_checkpoint_write": sum(e["during_checkpoint_write"] for e in kills),
        "sigterm_exit_0": sum(e["signal"] == "SIGTERM" and e["exit_code"] == 0 for e in kills),
        "sigterm_before_training": sum(e.get("sigterm_before_training", False) for e in kills),
        "tracebacks": sum(e.get("traceback", False) for e in kills),
        "unexpected_exits": len(unexpected),
        "metrics_steps_once": sum(r["metrics_steps_once"] for r in results),
        "workdir": str(root),
    }
    print(json.dumps({"summary": summary}), flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"summary": summary, "iterations": results}, indent=2))
    ok = (summary["identical"] == summary["metrics_steps_once"] == summary["iterations"] and not summary["tracebacks"]
          and not unexpected)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
