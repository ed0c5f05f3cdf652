"""Grouped convolutions on this backend: XLA's own against jaxconv's formulation, per MAC of a dense one.

For each layer shape, three convolutions are timed (forward, input gradient and kernel
gradient, each jitted alone, medians), alternately in one run:

* ``xla``: ``lax.conv_general_dilated`` with ``feature_group_count`` (what XLA:CPU runs natively);
* ``jaxconv``: ``jaxconv.layers.conv.convolve`` (on the CPU: dense convolutions over bundles of
  groups, ``grouped_by_dense``; a depthwise one as a sum over taps, ``depthwise_by_taps``);
* ``dense``: a dense convolution of about the same MACs (C' = sqrt(C * C_out / groups) channels);
* ``dense64``: a dense 64 -> 64 convolution of the same kernel and map size, a fixed reference
  (a ResNet's first stage), for layers whose C' is so small that its own cost per MAC is high.

Cost per MAC is reported relative to the dense convolutions'. With ``--torch-python`` the same
grouped and dense layers are also timed with PyTorch's CPU kernels (oneDNN, channels_last or
contiguous, whichever is faster; scripts/bench_vs_torch.py's layer worker, in its own process,
alternately with the JAX side), which says how far the best CPU library's grouped convolutions
are from its dense ones per MAC. Usage:

    python scripts/bench_grouped_conv.py [--batch 8] [--reps 5] [--skip-xla-above 2e9] [--json-out FILE]
                                         [--torch-python /path/to/torch/venv/bin/python] [--only TEXT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

from jaxconv.cli.startup import apply_default_xla_flags

apply_default_xla_flags()  # jaxconv's XLA:CPU settings, as every jaxconv command runs (before JAX starts)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from jaxconv.layers.conv import NHWC, convolve  # noqa: E402

# (name, channels in, channels out, groups, size, kernel, stride)
LAYERS = (
    ("issue 18: C=128 g8 32px", 128, 128, 8, 32, 3, 1),
    ("issue 18: C=256 g32 28px", 256, 256, 32, 28, 3, 1),
    ("ResNeXt-50 32x4d stage 1", 128, 128, 32, 56, 3, 1),
    ("ResNeXt-50 32x4d stage 3", 512, 512, 32, 14, 3, 1),
    ("ResNeXt-50 32x4d stage 4", 1024, 1024, 32, 7, 3, 1),
    ("ResNeXt-101 64x4d stage 1", 256, 256, 64, 56, 3, 1),
    ("AlexNet conv2 (2 towers)", 96, 256, 2, 27, 5, 1),
    # Depthwise (groups = channels; jaxconv: depthwise_by_taps on the CPU). The dense convolution of
    # the same MACs has sqrt(C) channels, itself slow per MAC: the ratio flatters depthwise layers.
    ("EfficientNet-B0 block 1 depthwise", 32, 32, 32, 112, 3, 1),
    ("MobileNetV2 stage 2 depthwise", 144, 144, 144, 56, 3, 1),
    ("EfficientNet-B0 stage 3 depthwise 5x5", 240, 240, 240, 28, 5, 1),
    ("MobileNetV2 last stage depthwise", 960, 960, 960, 7, 3, 1),
)
PASSES = ("forward", "input_grad", "kernel_grad")


def functions(channels, out, groups, kernel, stride, formulation):
    pads = ((kernel // 2, kernel // 2),) * 2

    def conv(x, w):
        if formulation == "jaxconv":
            return convolve(x, w, (stride, stride), pads, groups=groups)
        count = groups if formulation == "xla" else 1
        return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=NHWC,
                                        feature_group_count=count)

    return {
        "forward": jax.jit(conv),
        "input_grad": jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
        "kernel_grad": jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
    }


def operands(batch, size, channels, out, groups, kernel, stride, rng):
    x = jnp.asarray(rng.standard_normal((batch, size, size, channels)), jnp.float32)
    fan_in = kernel * kernel * channels / groups
    w = jnp.asarray(rng.standard_normal((kernel, kernel, channels // groups, out)) / math.sqrt(fan_in), jnp.float32)
    out_size = (size + 2 * (kernel // 2) - kernel) // stride + 1
    g = jnp.asarray(rng.standard_normal((batch, out_size, out_size, out)), jnp.float32)
    macs = batch * out_size * out_size * out * kernel * kernel * channels // groups
    return (x, w, g), macs


def torch_spec(batch, size, channels, out, groups, kernel, stride) -> dict:
    """A layer as bench_vs_torch.py's layer worker takes it: a jaxconv.bench.ConvLayer as a dict."""
    import dataclasses

    from jaxconv.bench import ConvLayer

    pad = kernel // 2
    return dataclasses.asdict(ConvLayer((batch, size, size, channels), out, (kernel, kernel), (stride, stride),
                                        ((pad, pad), (pad, pad)), (1, 1), groups, count=1, names=()))


def start_torch(torch_python: str):
    """bench_vs_torch.py's PyTorch layer worker, in the given Python (its own process)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    from bench_vs_torch import Worker

    worker = Worker("pytorch", [torch_python, os.path.join(here, "bench_vs_torch.py"), "--worker", "torch-layers",
                                "--torch-variants", "eager,channels_last"])
    if not worker.info.get("ready"):
        raise SystemExit(f"--torch-python {torch_python}: the PyTorch worker did not start: {worker.info}")
    return worker


def torch_times(worker, spec: dict, reps: int) -> dict[str, float]:
    reply = worker.ask("layer " + json.dumps({"layer": spec, "reps": reps, "warmup": 1}))
    return {p: statistics.median(reply["times"][p]) for p in PASSES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-xla-above", type=float, default=2e9,
                        help="skip XLA's grouped convolution for layers of more MACs (it takes seconds)")
    parser.add_argument("--json-out")
    parser.add_argument("--only", help="only the layers whose name contains this text, e.g. 'depthwise'")
    parser.add_argument("--torch-python", help="also time PyTorch's grouped and dense convolutions with this Python")
    args = parser.parse_args()
    if args.torch_python and not (os.path.isfile(args.torch_python) and os.access(args.torch_python, os.X_OK)):
        parser.error(f"--torch-python {args.torch_python}: not an executable file; give the python of an "
                     "environment with torch, e.g. /path/to/venv/bin/python")
    if args.only and not any(args.only in layer[0] for layer in LAYERS):
        parser.error(f"--only {args.only!r}: no layer's name contains it; the layers: "
                     + ", ".join(layer[0] for layer in LAYERS))
    torch_worker = start_torch(args.torch_python) if args.torch_python else None
    rng = np.random.default_rng(0)
    print(f"# XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"# {jax.devices()[0].device_kind} ({jax.default_backend()}), {platform.processor() or platform.machine()}, "
          f"jax {jax.__version__}, batch {args.batch}, {time.strftime('%Y-%m-%d')}")
    if torch_worker:
        print(f"# PyTorch {torch_worker.info['torch']}, {torch_worker.info['threads']} threads")
    torch_head = (" PyTorch dense / grouped (ms) | PyTorch per MAC vs its dense (vs its 64-ch) "
                  "| jaxconv / PyTorch grouped time |")
    print("| layer | MACs | dense (ms) | jaxconv (ms) | XLA grouped (ms) | jaxconv per MAC vs dense (vs 64-ch) "
          "| XLA per MAC vs dense |" + (torch_head if torch_worker else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if torch_worker else ""))
    rows = []
    for name, channels, out, groups, size, kernel, stride in LAYERS:
        if args.only and args.only not in name:
            continue
        grouped_ops, macs = operands(args.batch, size, channels, out, groups, kernel, stride, rng)
        dense_width = max(1, round(math.sqrt(channels * out / groups)))
        dense_ops, dense_macs = operands(args.batch, size, dense_width, dense_width, 1, kernel, stride, rng)
        variants = {"dense": (functions(dense_width, dense_width, 1, kernel, stride, "dense"), dense_ops, dense_macs),
                    "jaxconv": (functions(channels, out, groups, kernel, stride, "jaxconv"), grouped_ops, macs)}
        reference_ops, reference_macs = operands(args.batch, size, 64, 64, 1, kernel, stride, rng)
        variants["dense64"] = (functions(64, 64, 1, kernel, stride, "dense"), reference_ops, reference_macs)
        if macs * 3 <= args.skip_xla_above:
            variants["xla"] = (functions(channels, out, groups, kernel, stride, "xla"), grouped_ops, macs)
        times = {v: {p: [] for p in PASSES} for v in variants}
        for variant, (fns, ops, _) in variants.items():  # compile
            for p, fn in fns.items():
                jax.block_until_ready(fn(*ops[:2]) if p == "forward" else fn(*ops))
        torch_specs = {"torch_dense": torch_spec(args.batch, size, dense_width, dense_width, 1, kernel, stride),
                       "torch_dense64": torch_spec(args.batch, size, 64, 64, 1, kernel, stride),
                       "torch_grouped": torch_spec(args.batch, size, channels, out, groups, kernel, stride)}
        torch_runs = {v: [] for v in torch_specs} if torch_worker else {}
        for _ in range(args.reps):  # alternately
            for variant, (fns, ops, _) in variants.items():
                for p, fn in fns.items():
                    began = time.perf_counter()
                    jax.block_until_ready(fn(*ops[:2]) if p == "forward" else fn(*ops))
                    times[variant][p].append(time.perf_counter() - began)
            for variant in torch_runs:  # one median of 3 per pass each round
                torch_runs[variant].append(torch_times(torch_worker, torch_specs[variant], 3))
        total = {v: sum(statistics.median(times[v][p]) for p in PASSES) for v in variants}
        per_mac = {v: total[v] / variants[v][2] for v in variants}
        row = {"layer": name, "channels": channels, "out": out, "groups": groups, "size": size, "kernel": kernel,
               "macs": macs, "dense_width": dense_width, "dense_macs": dense_macs,
               "seconds": {v: {p: statistics.median(times[v][p]) for p in PASSES} for v in variants},
               "per_mac_vs_dense": {v: per_mac[v] / per_mac["dense"] for v in variants},
               "per_mac_vs_dense64": {v: per_mac[v] / per_mac["dense64"] for v in variants}}
        for variant, runs in torch_runs.items():
            row["seconds"][variant] = {p: statistics.median(run[p] for run in runs) for p in PASSES}
        rows.append(row)
        xla = f"{1e3 * total['xla']:.1f}" if "xla" in total else "(skipped)"
        xla_ratio = f"{row['per_mac_vs_dense']['xla']:.1f}x" if "xla" in total else "—"
        line = (f"| {name} | {macs / 1e6:.0f}M | {1e3 * total['dense']:.1f} | {1e3 * total['jaxconv']:.1f} | {xla} "
                f"| {row['per_mac_vs_dense']['jaxconv']:.2f}x ({row['per_mac_vs_dense64']['jaxconv']:.2f}x) "
                f"| {xla_ratio} |")
        if torch_runs:
            dense_s, dense64_s, grouped_s = (sum(row["seconds"][v].values())
                                             for v in ("torch_dense", "torch_dense64", "torch_grouped"))
            row["torch_per_mac_vs_its_dense"] = (grouped_s / macs) / (dense_s / dense_macs)
            row["torch_per_mac_vs_its_dense64"] = (grouped_s / macs) / (dense64_s / reference_macs)
            row["jaxconv_over_torch_grouped"] = total["jaxconv"] / grouped_s
            line += (f" {1e3 * dense_s:.1f} / {1e3 * grouped_s:.1f} | {row['torch_per_mac_vs_its_dense']:.2f}x "
                     f"({row['torch_per_mac_vs_its_dense64']:.2f}x) "
                     f"| {row['jaxconv_over_torch_grouped']:.2f} |")
        print(line, flush=True)
    if torch_worker:
        torch_worker.close()
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
