"""Where a training step's time goes on XLA's CPU backend: fixed cost per step, and time by op kind.

Two measurements of `jaxconv bench`'s train step (synthetic data on the devices, SGD momentum,
BatchNorm in training mode), in one process, with jaxconv's default XLA flags:

1. **Per-step cost against the batch size.** The step is compiled at each batch size; steps are
   then timed in alternating rounds (one round times every batch size once), and the median step
   time is fitted as ``fixed + per_image * batch``. ``fixed`` is what a step costs whatever its
   batch (launching its ops, the runtime, the optimizer update of every parameter).
2. **One batch size under jax.profiler.** XLA:CPU records every op (thunk) it runs with its
   duration and thread; the ops are summed per step by kind (the op's name without its ``.N``
   suffix: ``convolution``, ``loop_fusion``, ``ynn_fusion``, ``transpose_copy_fusion``, ...), with
   how many ran, how many were short (< 20 µs), and the busy time of each thread against the
   step's wall time.

    python scripts/profile_step.py resnet20 --image-size 32 --batch-sizes 8,32,128 --profile-batch 32

Prints a JSON record (``--format json``) or a text report; the trace stays under ``--trace-dir``
for TensorBoard's profile plugin or Perfetto.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import pathlib
import re
import statistics
import sys
import tempfile
import time

from jaxconv.cli.startup import apply_default_xla_flags

SHORT_OP_US = 20.0


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x``; returns (a, b)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def scan_batch_sizes(model: str, image_size: int, batch_sizes: list[int], rounds: int, steps: int) -> dict:
    from jaxconv.bench.common import Request
    from jaxconv.bench.step import compile_step

    compiled = {b: compile_step(Request(model, batch_size=b, image_size=image_size)) for b in batch_sizes}
    for step in compiled.values():
        step.run(2)  # warm-up
    times: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for _ in range(rounds):
        for b in batch_sizes:
            times[b] += compiled[b].run(steps)
    medians = {b: statistics.median(t) for b, t in times.items()}
    fixed, per_image = fit_line([float(b) for b in batch_sizes], [medians[b] for b in batch_sizes])
    return {
        "batch_sizes": batch_sizes,
        "median_step_ms": {b: round(1e3 * m, 2) for b, m in medians.items()},
        "images_per_s": {b: round(b / m, 1) for b, m in medians.items()},
        "fixed_ms": round(1e3 * fixed, 2),
        "per_image_ms": round(1e3 * per_image, 3),
        "compile_s": {b: round(c.compile_s, 2) for b, c in compiled.items()},
        "flops_per_step": {b: c.flops for b, c in compiled.items()},
    }


def _trace_events(trace_dir: pathlib.Path) -> list[dict]:
    files = sorted(trace_dir.glob("**/*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SystemExit(f"no trace written under {trace_dir}")
    with gzip.open(files[-1], "rt", encoding="utf-8") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def profile(model: str, image_size: int, batch_size: int, steps: int, trace_dir: pathlib.Path) -> dict:
    import jax

    from jaxconv.bench.common import Request
    from jaxconv.bench.step import compile_step

    step = compile_step(Request(model, batch_size=batch_size, image_size=image_size))
    step.run(3)
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    started = time.perf_counter()
    step.run(steps)
    wall = time.perf_counter() - started
    jax.profiler.stop_trace()

    trace = _trace_events(trace_dir)
    events = [e for e in trace if e.get("ph") == "X" and "dur" in e]
    thread_names = {(e.get("pid"), e.get("tid")): e["args"]["name"] for e in trace
                    if e.get("ph") == "M" and e.get("name") == "thread_name"}
    # XLA's ops: named NAME.N by the compiler (the executor's and Python's own events are not).
    ops = [e for e in events if re.fullmatch(r"[\w-]+\.\d+|[\w-]+", e["name"]) and not e["name"].startswith(
        ("ThunkExecutor", "PjitFunction", "$"))]
    kinds: dict[str, dict] = collections.defaultdict(lambda: {"ms": 0.0, "count": 0, "short": 0})
    threads: dict[str, float] = collections.Counter()
    for e in ops:
        kind = re.sub(r"\.\d+$", "", e["name"])
        row = kinds[kind]
        row["ms"] += e["dur"] / 1e3 / steps
        row["count"] += 1
        row["short"] += e["dur"] < SHORT_OP_US
        threads[thread_names.get((e.get("pid"), e.get("tid")), str(e.get("tid")))] += e["dur"] / 1e3 / steps
    total_ms = sum(r["ms"] for r in kinds.values())
    count = sum(r["count"] for r in kinds.values())
    short = [e["dur"] for e in ops if e["dur"] < SHORT_OP_US]
    return {
        "batch_size": batch_size,
        "steps": steps,
        "wall_ms_per_step": round(1e3 * wall / steps, 2),
        "op_ms_per_step": round(total_ms, 2),
        "ops_per_step": count // steps,
        "short_ops_per_step": len(short) // steps,
        "short_ops_ms_per_step": round(sum(short) / 1e3 / steps, 2),
        "kinds": {k: {"ms": round(v["ms"], 2), "per_step": v["count"] // steps, "short": v["short"] // steps}
                  for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]["ms"])},
        "thread_busy_ms_per_step": {k: round(v, 2) for k, v in threads.most_common()},
        "trace_dir": str(trace_dir),
    }


def report(record: dict) -> str:
    scan, prof = record["scan"], record["profile"]
    lines = [f"# {record['model']} at {record['image_size']} px, XLA_FLAGS={record['xla_flags']!r}",
             "", "batch | median step (ms) | images/s | compile (s)", "---:|---:|---:|---:"]
    for b in scan["batch_sizes"]:
        lines.append(f"{b} | {scan['median_step_ms'][b]} | {scan['images_per_s'][b]} | {scan['compile_s'][b]}")
    lines += ["", f"fit: step = {scan['fixed_ms']} ms + {scan['per_image_ms']} ms x batch", "",
              f"profile at batch {prof['batch_size']}: {prof['wall_ms_per_step']} ms per step (wall), "
              f"{prof['op_ms_per_step']} ms of ops summed over threads, {prof['ops_per_step']} ops per step, "
              f"{prof['short_ops_per_step']} of them under {SHORT_OP_US:.0f} us ({prof['short_ops_ms_per_step']} ms)",
              "", "op kind | ms per step | share | ops per step | short", "---|---:|---:|---:|---:"]
    for kind, row in prof["kinds"].items():
        share = 100 * row["ms"] / prof["op_ms_per_step"]
        lines.append(f"{kind} | {row['ms']} | {share:.1f}% | {row['per_step']} | {row['short']}")
    lines += ["", "thread | busy ms per step", "---|---:"]
    lines += [f"{name} | {ms}" for name, ms in prof["thread_busy_ms_per_step"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-sizes", default="8,32,128", help="comma-separated, for the fixed-cost fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="steps per batch size per round")
    parser.add_argument("--profile-batch", type=int, default=32)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--trace-dir", default=None)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    try:
        batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    except ValueError:
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give whole numbers separated by commas, e.g. 8,32,128")
    if len(batch_sizes) < 2 or batch_sizes[0] < 1:
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give at least two positive batch sizes to fit a line")

    apply_default_xla_flags()  # as the jaxconv CLI starts: before JAX is imported
    trace_dir = pathlib.Path(args.trace_dir or tempfile.mkdtemp(prefix="jaxconv-profile-"))
    record = {"model": args.model, "image_size": args.image_size, "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "date": time.strftime("%Y-%m-%d %H:%M %Z"),
              "scan": scan_batch_sizes(args.model, args.image_size, batch_sizes, args.rounds, args.steps),
              "profile": profile(args.model, args.image_size, args.profile_batch, args.profile_steps, trace_dir)}
    import jax

    record["devices"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    print(json.dumps(record, indent=1) if args.format == "json" else report(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
