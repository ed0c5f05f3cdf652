#!/usr/bin/env python3
"""Time to a test accuracy: `jaxconv train` against the same recipe in a plain PyTorch loop, in one run.

    python scripts/bench_vs_torch.py --end-to-end --torch-python /work/torchenv/bin/python
    python scripts/end_to_end_vs_torch.py --target 0.8 --rounds 2 --torch-python /path/to/torch/venv/bin/python

The recipe is experiments/default.py's (the quickstart's): ResNet-20 (option-A shortcuts, CIFAR stem) on
the built-in shapes dataset at 32 px, batch 32, SGD with momentum 0.9 at 0.05, 0.3 epoch of linear
warm-up then cosine decay to zero at the last step, weight decay 1e-4 on the kernels only (added to the
gradient, as both libraries do), random horizontal flips, BatchNorm momentum 0.9 (PyTorch's 0.1) and
eps 1e-5. jaxconv runs `jaxconv train --config experiments/default.py`; PyTorch runs the same network
written in torch.nn over the same images, exported once from the TFDS dataset jaxconv prepared (so
dataset generation is left out of both): a permutation per epoch, flips per image, no DataLoader
workers. Both evaluate on all 2,000 test images every --eval-every steps.

Each side runs in its own process, one at a time, the order swapped every round (A B, B A, ...). The
clock starts when the process is launched, so each side's time includes its imports, data loading,
and (for jaxconv) compilation, as a user waits for them. The report gives, per round, the wall time
at which the test top-1 first reaches --target, the final top-1 and the training images/s.

Not the same in the two: the initialisations' random streams (both He-normal fan-out for the
convolutions, LeCun-normal for the classifier, zero biases), and so the accuracy curves: with one seed,
which side crosses the target first depends on the streams as much as on the framework. With
--seeds 0,1,2 each round runs every seed on both sides, and the ratio compares the medians over all
runs (a run that never reaches the target counts as infinitely slow); the training images/s ratio
beside it is the framework's alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
EVAL_LINE = re.compile(r"^eval @ step (\d+)\b.*?top1 ([0-9.]+)%")
# experiments/default.py's recipe, which the PyTorch loop repeats.
RECIPE = {"batch_size": 32, "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "warmup_epochs": 0.3,
          "mean": 127.5, "std": 64.0}


# --- the PyTorch side (runs in --torch-python; needs only torch and numpy) ---------------------------


def torch_resnet20(num_classes: int = 10):
    """The CIFAR ResNet-20 in PyTorch (option-A shortcuts, BatchNorm), initialised as jaxconv's resnet20 is."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.pad = stride, cout - cin

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
            if self.pad:  # option A: the new channels are zeros
                shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, 0, self.pad))
            return torch.relu(y + shortcut)

    widths = (16, 32, 64)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, width in enumerate(widths):
        for block in range(3):
            layers.append(Block(cin, width, 2 if stage and not block else 1))
            cin = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=1 / math.sqrt(module.in_features))
            nn.init.zeros_(module.bias)
    return model


def torch_worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    data = np.load(args.data)
    to_input = lambda images: (torch.from_numpy(images).permute(0, 3, 1, 2).float() - RECIPE["mean"]) / RECIPE["std"]
    train_x, train_y = to_input(data["train_images"]), torch.from_numpy(data["train_labels"]).long()
    test_x, test_y = to_input(data["test_images"]), torch.from_numpy(data["test_labels"]).long()

    model = torch_resnet20(num_classes=10)
    decayed = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": RECIPE["weight_decay"]},
                                 {"params": others, "weight_decay": 0.0}], lr=RECIPE["learning_rate"],
                                momentum=RECIPE["momentum"])
    batch = RECIPE["batch_size"]
    per_epoch = len(train_x) // batch
    warmup = int(round(RECIPE["warmup_epochs"] * per_epoch))

    def rate(step: int) -> float:  # optax's linear warm-up from 0, then cosine decay to 0 at the last step
        if step < warmup:
            return RECIPE["learning_rate"] * step / warmup
        return RECIPE["learning_rate"] * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(test_x[i:i + 500]).argmax(1) == test_y[i:i + 500]).sum())
                          for i in range(0, len(test_x), 500))
        print(f"eval @ step {step}: top1 {100 * correct / len(test_x):.2f}%", flush=True)
        model.train()

    loss_fn = nn.CrossEntropyLoss()
    order, position, trained_s = torch.randperm(len(train_x)), 0, 0.0
    model.train()
    for step in range(args.steps):
        if position + batch > len(train_x):
            order, position = torch.randperm(len(train_x)), 0
        index = order[position:position + batch]
        position += batch
        started = time.perf_counter()
        x = train_x[index]
        flip = torch.rand(batch) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        for group in optimizer.param_groups:
            group["lr"] = rate(step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), train_y[index])
        loss.backward()
        optimizer.step()
        trained_s += time.perf_counter() - started
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            evaluate(step + 1)
    print(f"trained {args.steps * batch / trained_s:.1f} images/s", flush=True)


# --- the driver (runs in jaxconv's environment) ---------------------------------------------------


def export_dataset(data_dir: pathlib.Path, out: pathlib.Path) -> None:
    """The built-in dataset at 32 px as jaxconv prepares it (generated once), written as uint8 arrays."""
    import numpy as np

    from jaxconv.data.catalog import DATASETS
    from jaxconv.data.sources import prepare, tfds_builder
    from jaxconv.logs import without_absl_messages

    spec = DATASETS["shapes"]
    builder = tfds_builder(spec, str(data_dir), image_size=32)
    prepare(builder, spec, str(data_dir), log=lambda m: print(m, file=sys.stderr))
    arrays = {}
    for split in ("train", "test"):
        source = builder.as_data_source(split=split)  # ArrayRecord: random access, decoded records
        with without_absl_messages("OpenCV is not installed"):
            records = [source[i] for i in range(len(source))]
        arrays[f"{split}_images"] = np.stack([r["image"] for r in records]).astype(np.uint8)
        arrays[f"{split}_labels"] = np.array([r["label"] for r in records], np.int64)
    np.savez(out, **arrays)


def run_side(name: str, command: list[str], env: dict[str, str]) -> dict:
    """Launches one side and timestamps its evaluation lines from the launch."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=ROOT)
    evals, tail, images_per_s, last_line_s = [], [], None, None
    for line in process.stdout:
        last_line_s = round(time.perf_counter() - started, 2)
        tail = (tail + [line.rstrip()])[-20:]
        match = EVAL_LINE.match(line.strip())
        if match:
            evals.append({"step": int(match[1]), "s": round(time.perf_counter() - started, 2),
                          "top1": float(match[2]) / 100})
        found = re.search(r"([0-9.]+) images/s", line) if name == "pytorch" else re.search(r"\| ([0-9.]+) img/s", line)
        if found:
            images_per_s = float(found[1])
    if process.wait() != 0:
        raise SystemExit(f"error: the {name} side exited with status {process.returncode}:\n" + "\n".join(tail))
    # last_line_s: when the side printed its last line (jaxconv: its run summary); the rest of wall_s is its exit.
    return {"side": name, "evals": evals, "wall_s": round(time.perf_counter() - started, 2),
            "images_per_s": images_per_s, "last_line_s": last_line_s}


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return seeds


def time_to(evals: list[dict], target: float) -> float | None:
    return next((e["s"] for e in evals if e["top1"] >= target), None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.8, help="test top-1 to reach, as a fraction")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each run (default.py's)")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between evaluations, both sides")
    parser.add_argument("--rounds", type=int, default=2, help="alternations (A B, B A, ...)")
    parser.add_argument("--seeds", type=_seeds, default=(0,), metavar="S,S,...",
                        help="initialisation and data-order seeds, each run on both sides in every round (default 0); "
                             "with several, the ratio compares the two sides' medians over all their runs")
    parser.add_argument("--data-dir", type=pathlib.Path, help="where jaxconv prepares the built-in dataset "
                                                              "(default: a temporary directory)")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="the Python (with torch) of the PyTorch side; default: this one")
    parser.add_argument("--json-out", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--worker", choices=("torch",), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # the worker's one seed
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "torch":
        return torch_worker(args)
    if not 0 < args.target <= 1:
        parser.error(f"--target {args.target}: a test top-1 as a fraction, 0 < target <= 1 (e.g. 0.8)")
    for key in ("steps", "eval_every", "rounds"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} {getattr(args, key)}: must be at least 1")
    with tempfile.TemporaryDirectory(prefix="jaxconv-e2e-") as scratch:
        scratch = pathlib.Path(scratch)
        data_dir = args.data_dir or scratch / "data"
        arrays = scratch / "shapes32.npz"
        export_dataset(data_dir, arrays)

        def jax_command(seed: int, round_: int) -> list[str]:
            return [sys.executable, "-m", "jaxconv.cli", "train", "--config", str(ROOT / "experiments/default.py"),
                    f"--config.data_dir={data_dir}", f"--config.num_train_steps={args.steps}",
                    f"--config.eval_every_steps={args.eval_every}", f"--config.seed={seed}",
                    f"--config.checkpoint_every_steps={args.steps}", "--workdir", str(scratch / f"run{round_}_{seed}")]

        def torch_command(seed: int, round_: int) -> list[str]:
            return [args.torch_python, str(pathlib.Path(__file__).resolve()), "--worker", "torch", "--data",
                    str(arrays), "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--seed", str(seed)]

        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        results = []
        for round_ in range(args.rounds):
            for seed in args.seeds:
                sides = [("jaxconv", jax_command), ("pytorch", torch_command)]
                for name, command in sides if (round_ + seed) % 2 == 0 else sides[::-1]:
                    result = run_side(name, command(seed, round_), env)
                    result.update(round=round_ + 1, seed=seed, time_to_target_s=time_to(result["evals"], args.target))
                    results.append(result)
                    print(f"round {round_ + 1} seed {seed} {name}: {result['time_to_target_s']} s to {args.target:.0%}, "
                          f"final top-1 {result['evals'][-1]['top1']:.1%}, {result['wall_s']} s in all", file=sys.stderr)
    command = " ".join(map(shlex.quote, sys.argv))
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command, "target": args.target,
              "steps": args.steps, "results": results}
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))


def format_table(report: dict) -> str:
    rows = ["| round | seed | side | time to {:.0%} test top-1 (s) | final top-1 | whole run (s) | training images/s |"
            .format(report["target"]), "|---|---:|---|---:|---:|---:|---:|"]
    for r in report["results"]:
        reached = "not reached" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.1f}"
        rows.append(f"| {r['round']} | {r.get('seed', 0)} | {r['side']} | {reached} | {r['evals'][-1]['top1']:.1%} | "
                    f"{r['wall_s']:.1f} | {r['images_per_s'] or 0:.0f} |")
    # A run that never reached the target counts as infinitely slow, so that the medians are over every run.
    times = {side: [r["time_to_target_s"] or math.inf for r in report["results"] if r["side"] == side]
             for side in ("jaxconv", "pytorch")}
    medians = {side: statistics.median(t) for side, t in times.items() if t}
    runs = "runs" if len({r.get("seed", 0) for r in report["results"]}) > 1 else "rounds"
    if len(medians) == 2 and all(math.isfinite(m) for m in medians.values()):
        rows.append(f"\njaxconv reaches {report['target']:.0%} at {medians['pytorch'] / medians['jaxconv']:.2f}x "
                    f"PyTorch's speed (medians over {runs}, {medians['jaxconv']:.1f} against {medians['pytorch']:.1f} s; "
                    f"above 1: faster)")
    elif len(medians) == 2:
        rows.append(f"\nno ratio: at least half of one side's {runs} did not reach {report['target']:.0%}")
    rates = {side: [r["images_per_s"] for r in report["results"] if r["side"] == side and r["images_per_s"]]
             for side in ("jaxconv", "pytorch")}
    if all(rates.values()):
        rows.append(f"training images/s: jaxconv at {statistics.median(rates['jaxconv']) / statistics.median(rates['pytorch']):.2f}x "
                    f"PyTorch's (medians over {runs})")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
