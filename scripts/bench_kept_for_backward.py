#!/usr/bin/env python3
"""Training steps with and without ``kept_for_backward`` (XLA:CPU), alternately, in one process.

On the CPU backend a differentiated dense convolution's input passes through a conditional
(``jaxconv.layers.conv.kept_for_backward``), so that the layout copy before its kernel gradient
reads a buffer instead of recomputing the elementwise chain that produced it. This script
compiles `jaxconv bench`'s train step for each SPEC twice — as jaxconv runs it, and with that
identity taken out — and times the two in alternating rounds (medians), with what the compiled
steps hold: conditionals, and the instructions inside XLA's transpose fusions.

    python scripts/bench_kept_for_backward.py resnet20:32:32 resnet20:32:128 resnet50:64:16

SPEC is MODEL:IMAGE_SIZE:BATCH. Prints one JSON line per SPEC.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys

from jaxconv.cli.startup import apply_default_xla_flags


def parse_spec(text: str) -> tuple[str, int, int]:
    try:
        model, size, batch = text.split(":")
        return model, int(size), int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MODEL:IMAGE_SIZE:BATCH, e.g. resnet20:32:128") from None


def transpose_fusion_instructions(hlo: str) -> tuple[int, int]:
    """(how many transpose fusions, how many instructions their fused computations hold)."""
    sizes = {}
    for block in hlo.split("\n\n"):
        head = re.match(r"%?(\S+) ", block.strip())
        if head:
            sizes[head.group(1)] = block.count("\n")
    calls = re.findall(r"%transpose[a-z_]*fusion[.0-9]* = .*?calls=%(\S+?)[,\s]", hlo)
    return len(calls), sum(sizes.get(name, 0) for name in calls)


def time_alternately(compiled: dict, rounds: int, steps: int, facts: dict) -> dict[str, list[float]]:
    """Median step times of each compiled step, round by round, the steps taking turns within a round.

    Adds each one's images/s per round and their median to facts[name]."""
    for step in compiled.values():
        step.run(2)
    times = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, step in compiled.items():
            times[name].append(statistics.median(step.run(steps)))
    for name, step in compiled.items():
        batch = step.request.batch_size
        facts[name]["images_per_s"] = [round(batch / t, 1) for t in times[name]]
        facts[name]["median_images_per_s"] = round(batch / statistics.median(times[name]), 1)
    return times


def measure(spec: tuple[str, int, int], rounds: int, steps: int) -> dict:
    import jaxconv.layers.conv as conv
    from jaxconv.bench.common import Request
    from jaxconv.bench.step import compile_step

    model, size, batch = spec
    kept = conv.kept_for_backward
    compiled, facts = {}, {}
    for side in ("without", "with"):
        conv.kept_for_backward = kept if side == "with" else (lambda x, kernel: x)
        try:
            compiled[side] = compile_step(Request(model, batch_size=batch, image_size=size))
        finally:
            conv.kept_for_backward = kept
        hlo = compiled[side].executable.as_text()
        fusions, instructions = transpose_fusion_instructions(hlo)
        facts[side] = {"compile_s": round(compiled[side].compile_s, 2), "conditionals": hlo.count(" conditional("),
                       "transpose_fusions": fusions, "instructions_in_them": instructions}
    times = time_alternately(compiled, rounds, steps, facts)
    speedup = statistics.median(times["without"]) / statistics.median(times["with"])
    return {"model": model, "image_size": size, "batch_size": batch, "rounds": rounds, "steps": steps,
            **facts, "speedup": round(speedup, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", type=parse_spec, metavar="SPEC", help="MODEL:IMAGE_SIZE:BATCH")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per side and round (default 10)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    apply_default_xla_flags()
    from jaxconv.bench.common import BenchError

    for spec in args.specs:
        try:
            print(json.dumps(measure(spec, args.rounds, args.steps)), flush=True)
        except BenchError as e:
            print(f"bench_kept_for_backward.py: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
