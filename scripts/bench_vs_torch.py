#!/usr/bin/env python3
"""jaxconv against PyTorch on the same architectures, timed alternately in one run.

    python scripts/bench_vs_torch.py                          # the five models, CPU
    python scripts/bench_vs_torch.py --models resnet18 --rounds 5 --format json
    python scripts/bench_vs_torch.py --device cuda --dtype bfloat16 --models resnet50
    python scripts/bench_vs_torch.py --models resnet50 --torch-python /path/to/torch/venv/bin/python
    python scripts/bench_vs_torch.py --models resnet18 --no-torch \\
        --variant "noynn:XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type="   # jaxconv A/B, no torch
    python scripts/bench_vs_torch.py --layers --models resnet50 --batch-size 8   # convolution by convolution
    python scripts/bench_vs_torch.py --end-to-end --torch-python /path/to/torch/venv/bin/python   # time to accuracy

Each side runs in its own worker process (jaxconv's: this Python; PyTorch's: --torch-python,
which need not have JAX), builds the model, compiles and warms up, then waits. The driver
then asks them in turn for ``--steps`` timed training steps, for ``--rounds`` rounds
(A, B, A, B, ...): load from other processes on a shared machine hits both sides alike, and
the spread over rounds says how much it moved the figures. Only one worker computes at a time.

Both sides train the same network from the same recipe: torchvision's model (ResNet v1.5,
VGG-16, EfficientNet-B0; 1000 classes) against the jaxconv model with the same parameter
count, synthetic data at the same batch and resolution, SGD with momentum 0.9 and weight
decay 1e-4 on the kernels, BatchNorm in training mode, cross-entropy. The PyTorch worker
first tries its variants (eager / channels_last / torch.compile / both, see
--torch-variants) for a few steps and keeps the fastest; the report says which. On CUDA,
--dtype bfloat16 runs PyTorch under bf16 autocast and jaxconv with bfloat16 compute
(float32 parameters on both sides).

With --layers, the two sides time the model's convolutions one by one instead of training
steps: every distinct convolution (from ``jaxconv bench MODEL --mode layers``'s list), forward,
input gradient and kernel gradient, on the same shapes, alternately layer by layer. PyTorch
runs them as aten's conv2d and convolution_backward in each memory format of --torch-variants
(eager: contiguous NCHW, channels_last) and keeps the faster per layer; torch.compile does not
apply to single kernels. The table says which convolutions, and which pass, make the gap.

With --end-to-end, the two sides train the quickstart's network from scratch instead: `jaxconv
train` against the same recipe in a plain PyTorch loop over the same images, timed to a test
accuracy (scripts/end_to_end_vs_torch.py, which takes the options after it; see its --help).

The CUDA path (--device cuda) is for an NVIDIA GPU host with a CUDA build of torch and
jax[cuda]; it ran on one H200 on 2026-12-04 (training steps; --layers not yet, docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

# (batch on CPU, batch on GPU, image size) per model: the settings, and sizes that keep
# a CPU step to seconds for VGG-16 and EfficientNet-B0.
MODELS = {
    "resnet20": (128, 256, 32),  # the quickstart's network; PyTorch's from scripts/end_to_end_vs_torch.py
    "resnet18": (128, 256, 32),
    "resnet50": (32, 256, 224),
    "vgg16": (16, 128, 224),
    "efficientnet_b0": (32, 256, 224),
}
TORCH_VARIANTS = ("eager", "channels_last", "compile", "compile+channels_last")
NUM_CLASSES = 1000
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4


# --- workers ------------------------------------------------------------------------------------


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _serve(run_steps) -> None:
    """Answers 'run N' with the N step times and the process's CPU seconds per step, until 'quit'.

    CPU time (all threads) is the steadier figure on a machine other jobs share: it grows
    with the work, not with the time spent waiting for a core.
    """
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            return
        if command[0] == "run":
            steps = int(command[1])
            cpu = time.process_time()
            times = run_steps(steps)
            _reply({"times": times, "cpu_s_per_step": (time.process_time() - cpu) / steps})


def _pin(args: argparse.Namespace) -> None:
    """Restricts this worker to --cpus before a framework starts its thread pools (they size
    themselves from the CPUs the process may use)."""
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})


def _start_jax(args: argparse.Namespace):
    """Imports JAX for a worker as `jaxconv train` starts it; returns jax, or None (after telling
    the driver why) when it is not on the device asked for."""
    _pin(args)
    from jaxconv.cli.startup import apply_default_xla_flags, apply_malloc_tuning

    apply_default_xla_flags()  # JAXCONV_XLA_DEFAULTS=0: without
    apply_malloc_tuning()  # when asked for (JAXCONV_MALLOC_TUNING=1)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
    import jax

    problem = _check_jax_device(args)
    if problem:
        _reply({"ready": False, "error": problem})
        return None
    return jax


def jax_worker(args: argparse.Namespace) -> None:
    jax = _start_jax(args)
    if jax is None:
        return
    from jaxconv.bench import Request, compile_step

    request = Request(args.model, "train", args.batch_size, args.image_size, args.dtype, steps=1, warmup=args.warmup,
                      num_classes=NUM_CLASSES)
    step = compile_step(request)
    warm = step.run(args.warmup)
    _reply({
        "ready": True, "framework": "jaxconv", "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind, "compile_s": step.compile_s + step.lower_s,
        "warmup_times": warm, "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "params": sum(x.size for x in jax.tree_util.tree_leaves(step.state.params)),
    })
    _serve(step.run)


def _start_torch(args: argparse.Namespace):
    """Imports torch for a worker (pinned, threads, cuDNN settings); returns (torch, device)."""
    import types

    # torchvision's compiled extension cannot load beside a CPU-only torch of another build;
    # the models do not need it.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    _pin(args)
    import torch

    if args.cpus:
        torch.set_num_threads(len(args.cpus.split(",")))
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # as JAX's default precision does
        torch.backends.cudnn.allow_tf32 = True
    return torch, device


def torch_worker(args: argparse.Namespace) -> None:
    torch, device = _start_torch(args)
    import torchvision
    use_autocast = args.dtype == "bfloat16"
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator).to(device)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def build(variant: str):
        torch.manual_seed(0)
        if args.model == "resnet20":  # not in torchvision: the CIFAR ResNet-20 of the end-to-end comparison
            from end_to_end_vs_torch import torch_resnet20

            model = torch_resnet20(num_classes=NUM_CLASSES).to(device)
        else:
            model = getattr(torchvision.models, args.model)(num_classes=NUM_CLASSES).to(device)
        x = images
        if "channels_last" in variant:
            model = model.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        optimizer = torch.optim.SGD([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=LEARNING_RATE, momentum=MOMENTUM)
        forward = torch.compile(model) if "compile" in variant else model
        model.train()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                loss = torch.nn.functional.cross_entropy(forward(x), labels)
            loss.backward()
            optimizer.step()

        def run_steps(count: int) -> list[float]:
            times = []
            for _ in range(count):
                started = time.perf_counter()
                step()
                synchronize()
                times.append(time.perf_counter() - started)
            return times

        return model, run_steps

    trials = {}
    best = None
    for variant in args.torch_variants.split(","):
        started = time.perf_counter()
        try:
            model, run_steps = build(variant)
            run_steps(args.warmup)
        except Exception as e:  # e.g. torch.compile without a working C++ compiler: report it, try the rest
            trials[variant] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
            if device.type == "cuda":
                torch.cuda.empty_cache()  # what the failed variant allocated (an out-of-memory error's rest)
            continue
        setup_s = time.perf_counter() - started
        median = statistics.median(run_steps(args.select_steps))
        trials[variant] = {"setup_s": setup_s, "median_step_s": median}
        if best is None or median < best[1]:
            best = (variant, median, model, run_steps, setup_s)
        del model, run_steps  # the losers' memory goes back before the next variant builds
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if best is None:
        _reply({"ready": False, "error": f"no PyTorch variant ran: {trials}"})
        return
    variant, _, model, run_steps, setup_s = best
    _reply({
        "ready": True, "framework": "pytorch", "backend": device.type,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "compile_s": setup_s, "variant": variant, "variants": trials, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
    })
    _serve(run_steps)


def jax_layers_worker(args: argparse.Namespace) -> None:
    """Lists the model's distinct convolutions, then times the one each 'layer <json>' names."""
    jax = _start_jax(args)
    if jax is None:
        return
    import dataclasses

    from jaxconv.bench import ConvLayer, conv_layers, time_conv_layer

    layers = conv_layers(args.model, args.batch_size, args.image_size, NUM_CLASSES)
    _reply({"ready": True, "framework": "jaxconv", "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "layers": [dataclasses.asdict(layer) for layer in layers]})

    def run_layer(spec: dict) -> dict:
        return time_conv_layer(ConvLayer.from_dict(spec["layer"]), args.dtype, spec["reps"], spec["warmup"])

    _serve_layers(run_layer)


def _serve_layers(run_layer) -> None:
    for line in sys.stdin:
        command, _, payload = line.strip().partition(" ")
        if command != "layer":
            return
        _reply(run_layer(json.loads(payload)))


def torch_layers_worker(args: argparse.Namespace) -> None:
    """Times 'layer <json>' convolutions with aten's kernels, in each memory format asked for."""
    torch, device = _start_torch(args)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    formats = {"eager": torch.contiguous_format, "channels_last": torch.channels_last}
    chosen = [v for v in args.torch_variants.split(",") if v in formats] or ["channels_last"]
    _reply({"ready": True, "framework": "pytorch", "backend": device.type, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "memory_formats": chosen})

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_layer(spec: dict) -> dict:
        layer, reps, warmup = spec["layer"], spec["reps"], spec["warmup"]
        n, h, w, c = layer["input_shape"]
        (top, bottom), (left, right) = layer["padding"]
        stride, dilation, groups = layer["stride"], layer["dilation"], layer["groups"]
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, h, w, generator=generator)
        if top != bottom or left != right:  # conv2d pads symmetrically: pad the input beforehand
            x = torch.nn.functional.pad(x, (left, right, top, bottom))
            padding = [0, 0]
        else:
            padding = [top, left]
        weight = torch.randn(layer["features"], c // groups, *layer["kernel"], generator=generator)
        out = torch.nn.functional.conv2d(x, weight, None, stride, padding, dilation, groups)
        grad = torch.randn(out.shape, generator=generator)
        passes = {
            "forward": lambda x, weight, grad: torch.nn.functional.conv2d(x, weight, None, stride, padding,
                                                                          dilation, groups),
            "input_grad": lambda x, weight, grad: torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]),
            "kernel_grad": lambda x, weight, grad: torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [False, True, False]),
        }
        if not layer.get("input_grad", True):
            del passes["input_grad"]
        results = {}
        for variant in chosen:
            operands = [t.to(device=device, dtype=dtype).contiguous(memory_format=formats[variant])
                        for t in (x, weight, grad)]
            times: dict[str, list[float]] = {name: [] for name in passes}
            with torch.no_grad():
                for rep in range(warmup + reps):
                    for name, function in passes.items():
                        synchronize()
                        began = time.perf_counter()
                        function(*operands)
                        synchronize()
                        if rep >= warmup:
                            times[name].append(time.perf_counter() - began)
            results[variant] = times
        best = min(results, key=lambda v: sum(statistics.median(t) for t in results[v].values()))
        return {"times": results[best], "variant": best}

    _serve_layers(run_layer)


# --- driver -------------------------------------------------------------------------------------


class Worker:
    """One benchmark process, driven over its stdin/stdout."""

    def __init__(self, name: str, command: list[str], env: dict[str, str] | None = None):
        self.name = name
        full_env = {**os.environ, **(env or {})}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=full_env, bufsize=1)
        self.info = self._read()
        self.times: list[list[float]] = []
        self.cpu: list[float] = []

    def _read(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} stopped (exit status {self.process.wait()}); "
                                   "its error is above")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._read()

    def run(self, steps: int) -> list[float]:
        reply = self.ask(f"run {steps}")
        self.times.append(reply["times"])
        self.cpu.append(reply["cpu_s_per_step"])
        return reply["times"]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def summarize(worker: Worker, batch_size: int) -> dict:
    every = [t for round_times in worker.times for t in round_times]
    per_round = [batch_size / statistics.median(r) for r in worker.times]
    median = statistics.median(every)
    return {
        "name": worker.name,
        **{k: v for k, v in worker.info.items() if k not in ("ready", "warmup_times")},
        "step_time_s": median,
        "images_per_sec": batch_size / median,
        "images_per_sec_rounds": per_round,
        "cpu_s_per_step": statistics.median(worker.cpu),
        "steps_timed": len(every),
    }


def _environments(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    """The environments of the jaxconv and PyTorch workers.

    On the CPU, JAX is kept off any GPU. On CUDA both sides get the same single GPU (the first
    visible one: JAX would otherwise spread the batch over every GPU of the host against
    PyTorch's one), and JAX does not preallocate 75% of its memory, leaving room for the PyTorch
    worker. (The JAX worker checks that it did get the GPU, not a silent fallback to the CPU.)
    """
    if args.device == "cpu":
        return {"JAX_PLATFORMS": "cpu"}, {}
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    one = {"CUDA_VISIBLE_DEVICES": gpu}
    return {**one, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, one


def _check_jax_device(args: argparse.Namespace) -> str | None:
    """Why this JAX cannot stand for --device (None when it can)."""
    import jax

    if args.device == "cuda" and (jax.default_backend() != "gpu" or jax.device_count() != 1):
        return (f"--device cuda: JAX runs on {jax.device_count()} {jax.default_backend()} device(s), not one GPU; "
                "install jax[cuda12] or jax[cuda13] (its CUDA libraries must load beside torch's: a separate "
                "environment for torch via --torch-python avoids clashes)")
    return None


def compare_model(model: str, args: argparse.Namespace) -> dict:
    batch, size = _batch_and_size(model, args)
    common = ["--model", model, "--batch-size", str(batch), "--image-size", str(size), "--dtype", args.dtype,
              "--warmup", str(args.warmup), "--device", args.device] + (["--cpus", args.cpus] if args.cpus else [])
    script = os.path.abspath(__file__)
    jax_env, torch_env = _environments(args)
    specs = [("jaxconv", [sys.executable, script, "--worker", "jax", *common], jax_env)]
    for variant in args.variant:
        label, _, assignment = variant.partition(":")
        key, _, value = assignment.partition("=")
        if not label or not key:
            raise SystemExit(f"--variant {variant!r}: expected NAME:VAR=VALUE")
        specs.append((f"jaxconv[{label}]", [sys.executable, script, "--worker", "jax", *common],
                      {**jax_env, key: value}))
    if not args.no_torch:
        torch_python = shlex.split(args.torch_python) if args.torch_python else [sys.executable]
        specs.append(("pytorch", [*torch_python, script, "--worker", "torch", *common,
                                  "--torch-variants", args.torch_variants, "--select-steps", str(args.select_steps)],
                      torch_env))
    workers: list[Worker] = []
    try:
        for name, command, env in specs:  # warm-ups one at a time: they would slow each other down
            print(f"[{model}] starting {name} ...", file=sys.stderr, flush=True)
            worker = Worker(name, command, env)
            if not worker.info.get("ready"):
                raise RuntimeError(f"{name}: {worker.info.get('error')}")
            workers.append(worker)
        for r in range(args.rounds):
            for worker in workers if r % 2 == 0 else reversed(workers):
                worker.run(args.steps)
            line = "  ".join(f"{w.name} {batch / statistics.median(w.times[-1]):.1f} img/s" for w in workers)
            print(f"[{model}] round {r + 1}/{args.rounds}: {line}", file=sys.stderr, flush=True)
    finally:
        for worker in workers:
            worker.close()
    results = [summarize(w, batch) for w in workers]
    entry = {"model": model, "batch_size": batch, "image_size": size, "dtype": args.dtype, "device": args.device,
             "rounds": args.rounds, "steps_per_round": args.steps, "workers": results}
    base = results[0]
    reference = next((r for r in results if r["framework"] == "pytorch"), None)
    if reference is not None:
        paired = [a / b for a, b in zip(base["images_per_sec_rounds"], reference["images_per_sec_rounds"])]
        entry["ratio"] = base["images_per_sec"] / reference["images_per_sec"]
        entry["ratio_rounds"] = paired
    return entry


def _batch_and_size(model: str, args: argparse.Namespace) -> tuple[int, int]:
    if model in MODELS:
        cpu_batch, gpu_batch, size = MODELS[model]
    else:  # any jaxconv model, jaxconv variants only (--no-torch)
        from jaxconv import model_info

        cpu_batch, gpu_batch, size = 128, 256, model_info(model).image_size
    return args.batch_size or (gpu_batch if args.device == "cuda" else cpu_batch), args.image_size or size


def compare_layers(model: str, args: argparse.Namespace) -> dict:
    """Each distinct convolution of ``model``, timed by both sides alternately (--layers)."""
    batch, size = _batch_and_size(model, args)
    common = ["--model", model, "--batch-size", str(batch), "--image-size", str(size), "--dtype", args.dtype,
              "--device", args.device, "--torch-variants", args.torch_variants] + \
        (["--cpus", args.cpus] if args.cpus else [])
    script = os.path.abspath(__file__)
    jax_env, torch_env = _environments(args)
    specs = [("jaxconv", [sys.executable, script, "--worker", "jax-layers", *common], jax_env)]
    if not args.no_torch:
        torch_python = shlex.split(args.torch_python) if args.torch_python else [sys.executable]
        specs.append(("pytorch", [*torch_python, script, "--worker", "torch-layers", *common], torch_env))
    workers: list[Worker] = []
    rows = []
    try:
        for name, command, env in specs:
            print(f"[{model} layers] starting {name} ...", file=sys.stderr, flush=True)
            worker = Worker(name, command, env)
            if not worker.info.get("ready"):
                raise RuntimeError(f"{name}: {worker.info.get('error')}")
            workers.append(worker)
        layers = workers[0].info["layers"]
        for index, layer in enumerate(layers):
            times = {w.name: {} for w in workers}
            variant = None
            for r in range(args.rounds):
                for worker in workers if r % 2 == 0 else reversed(workers):
                    reply = worker.ask("layer " + json.dumps({"layer": layer, "reps": args.steps,
                                                              "warmup": args.warmup}))
                    for name, values in reply["times"].items():
                        times[worker.name].setdefault(name, []).extend(values)
                    variant = reply.get("variant", variant)
            row = {"layer": layer, "count": layer["count"], "torch_variant": variant}
            for side, passes in times.items():
                row[side] = {name: statistics.median(values) for name, values in passes.items()}
            rows.append(row)
            text = "  ".join(f"{side} {1e3 * sum(row[side].values()):.1f} ms" for side in times)
            print(f"[{model} layers] {index + 1}/{len(layers)} {_describe(layer)} x{layer['count']}: {text}",
                  file=sys.stderr, flush=True)
    finally:
        for worker in workers:
            worker.close()
    entry = {"model": model, "batch_size": batch, "image_size": size, "dtype": args.dtype, "device": args.device,
             "mode": "layers", "rounds": args.rounds, "reps_per_round": args.steps,
             "workers": [{k: v for k, v in w.info.items() if k not in ("ready", "layers")} | {"name": w.name}
                         for w in workers],
             "layers": rows}
    totals = {}
    for w in workers:
        totals[w.name] = {name: sum(r[w.name].get(name, 0.0) * r["count"] for r in rows)
                          for name in ("forward", "input_grad", "kernel_grad")}
    entry["totals_s"] = totals
    if "pytorch" in totals:
        entry["ratio"] = sum(totals["pytorch"].values()) / sum(totals["jaxconv"].values())
    return entry


def _describe(layer: dict) -> str:
    from jaxconv.bench import ConvLayer  # no JAX: the driver stays off the devices

    return ConvLayer.from_dict(layer).describe()


def format_layers_table(entry: dict) -> str:
    sides = [w["name"] for w in entry["workers"]]
    passes = ("forward", "input_grad", "kernel_grad")
    head = " | ".join(f"{side} fwd / in / kernel ms" for side in sides)
    lines = [f"{entry['model']}, batch {entry['batch_size']} at {entry['image_size']} px, {entry['dtype']}, "
             f"{entry['device']}: median of {entry['rounds']} x {entry['reps_per_round']} per pass",
             "", f"| layer | count | {head} |" + (" PyTorch memory format | ratio |" if len(sides) > 1 else ""),
             "|---|---:|" + "---:|" * len(sides) + ("---|---:|" if len(sides) > 1 else "")]

    def cells(times: dict) -> str:
        return " / ".join(f"{1e3 * times[p]:.2f}" if p in times else "-" for p in passes)

    for row in entry["layers"]:
        line = f"| {_describe(row['layer'])} | {row['count']} | " + " | ".join(cells(row[s]) for s in sides) + " |"
        if len(sides) > 1:
            ratio = sum(row["pytorch"].values()) / sum(row["jaxconv"].values())
            line += f" {row['torch_variant']} | {ratio:.2f} |"
        lines.append(line)
    totals = entry["totals_s"]
    line = f"| **all (x count)** | {sum(r['count'] for r in entry['layers'])} | " + \
        " | ".join(" / ".join(f"{1e3 * totals[s][p]:.1f}" for p in passes) for s in sides) + " |"
    if len(sides) > 1:
        line += f" | **{entry['ratio']:.2f}** |"
    lines.append(line)
    if len(sides) > 1:
        lines.append("\nratio = PyTorch's time / jaxconv's time for the same passes (jaxconv/PyTorch speed).")
    return "\n".join(lines) + "\n"


def format_table(entries: list[dict]) -> str:
    lines = ["| model | batch | px | side | img/s (median) | per round | CPU s/step | compile/setup "
             "| ratio jaxconv/PyTorch |",
             "|---|---:|---:|---|---:|---|---:|---:|---|"]
    for e in entries:
        for w in e["workers"]:
            rounds = ", ".join(f"{v:.3g}" for v in w["images_per_sec_rounds"])
            side = w["name"] + (f" ({w['variant']})" if w.get("variant") else "")
            ratio = ""
            if w["framework"] == "jaxconv" and w is e["workers"][0] and "ratio" in e:
                spread = e["ratio_rounds"]
                ratio = f"**{e['ratio']:.2f}** (rounds {min(spread):.2f}–{max(spread):.2f})"
            lines.append(f"| {e['model']} | {e['batch_size']} | {e['image_size']} | {side} | "
                         f"{w['images_per_sec']:.3g} | {rounds} | {w['cpu_s_per_step']:.3g} | {w['compile_s']:.1f} s "
                         f"| {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if "--end-to-end" in sys.argv[1:]:  # the other mode, in its own script (its options differ)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from end_to_end_vs_torch import main as end_to_end

        return end_to_end([a for a in sys.argv[1:] if a != "--end-to-end"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per worker per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternations (A, B, A, B, ...)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--batch-size", type=int, help="override the per-model default")
    parser.add_argument("--image-size", type=int, help="override the per-model default")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--torch-python", help="the Python (with torch, torchvision) of the PyTorch worker; "
                                               "default: this one")
    parser.add_argument("--torch-variants", default=None,
                        help=f"comma-separated, of {', '.join(TORCH_VARIANTS)} (default: all on CUDA; on CPU "
                             "eager and channels_last, as torch.compile's CPU build takes minutes per model)")
    parser.add_argument("--select-steps", type=int, default=3, help="timed steps per PyTorch variant to pick one")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE",
                        help="also time jaxconv with an environment variable set, e.g. XLA_FLAGS=...")
    parser.add_argument("--no-torch", action="store_true", help="jaxconv variants only")
    parser.add_argument("--cpus", help="pin every worker to these CPUs, e.g. '0' (one core each side: on a "
                                       "shared machine, steadier than all cores)")
    parser.add_argument("--layers", action="store_true",
                        help="time each distinct convolution (forward, input and kernel gradient) instead of "
                             "training steps; --steps timings per pass per round")
    parser.add_argument("--end-to-end", action="store_true",
                        help="time to a test accuracy of `jaxconv train` against a plain PyTorch loop instead "
                             "(scripts/end_to_end_vs_torch.py; its options follow)")
    parser.add_argument("--format", choices=("md", "json"), default="md")
    parser.add_argument("--json-out", metavar="FILE", help="also write the results as JSON to FILE")
    # Worker mode (internal).
    parser.add_argument("--worker", choices=("jax", "torch", "jax-layers", "torch-layers"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_variants is None:
        args.torch_variants = ",".join(TORCH_VARIANTS if args.device == "cuda" else TORCH_VARIANTS[:2])
    unknown = [v for v in args.torch_variants.split(",") if v not in TORCH_VARIANTS]
    if unknown:
        parser.error(f"--torch-variants: unknown {', '.join(unknown)}; choose from {', '.join(TORCH_VARIANTS)}")
    if args.worker == "jax":
        return jax_worker(args)
    if args.worker == "torch":
        return torch_worker(args)
    if args.worker == "jax-layers":
        return jax_layers_worker(args)
    if args.worker == "torch-layers":
        return torch_layers_worker(args)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown and not args.no_torch:
        parser.error(f"--models: {', '.join(unknown)} have no PyTorch twin here; choose from {', '.join(MODELS)} "
                     "(or time jaxconv variants alone with --no-torch)")
    if args.json_out and not os.path.isdir(os.path.dirname(os.path.abspath(args.json_out))):
        parser.error(f"--json-out {args.json_out}: its directory does not exist")
    if args.dtype == "bfloat16" and args.device == "cpu":
        print("note: bfloat16 on CPU: jaxconv computes in bfloat16, PyTorch under CPU bf16 autocast",
              file=sys.stderr)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    try:
        entries = [(compare_layers if args.layers else compare_model)(m, args) for m in models]
    except RuntimeError as e:  # a worker that could not start or stopped: its reason, without the driver's trace
        raise SystemExit(f"error: {e}") from None
    command = " ".join(map(shlex.quote, sys.argv))
    report = json.dumps({"started": started, "command": command, "results": entries}, indent=2)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(report + "\n")
    if args.format == "json":
        print(report)
    else:
        print(f"started {started}; command: {command}\n")
        print("\n".join(map(format_layers_table, entries)) if args.layers else format_table(entries))


if __name__ == "__main__":
    main()
