#!/usr/bin/env python3
"""Training steps compiled with different XLA options, alternately, in one process.

XLA_FLAGS is read once per process, so comparing two settings of it means two processes, whose
timings drift apart on a shared machine. Most of XLA's options can instead be given to one
compilation (`jax.stages.Lowered.compile(compiler_options)`); this script compiles
`jaxconv bench`'s train step for each SPEC once per VARIANT and times them in alternating rounds
(medians), with what the compiled steps hold: YNNPACK fusions, convolutions and scratch memory.

    python scripts/bench_xla_options.py resnet20:32:32 resnet18:32:128 \\
        --variant eigen=xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE \\
        --variant ynn=xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION

SPEC is MODEL:IMAGE_SIZE:BATCH; VARIANT is NAME=OPTION=VALUE (repeat a NAME to give it several
options; NAME= alone compiles with no options). The first variant is the baseline of the
speedups. Prints one JSON line per SPEC.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys

from bench_kept_for_backward import parse_spec, time_alternately

from jaxconv.cli.startup import apply_default_xla_flags


def parse_variant(text: str) -> tuple[str, str | None, str | bool | int | None]:
    name, _, option = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=OPTION=VALUE or NAME=")
    if not option:
        return name, None, None
    key, sep, value = option.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=OPTION=VALUE, e.g. "
                                         "ynn=xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE")
    return name, key, _typed(value)


def _typed(value: str) -> str | bool | int:
    """An option's value as XLA takes it: its bool options refuse the strings 'true' and 'false'."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def _refused(e: Exception) -> bool:
    """Whether XLA refused an option or value at compile time (an unknown name, a wrong type)."""
    return type(e).__name__ == "XlaRuntimeError" or "INVALID_ARGUMENT" in str(e)


def measure(spec: tuple[str, int, int], variants: dict[str, dict[str, str | bool | int]], rounds: int, steps: int,
            dtype: str = "float32") -> dict:
    """A variant whose options XLA refuses is reported with the refusal and left out of the timing
    (another jaxlib may not know an option); the first variant must compile."""
    from jaxconv.bench.common import Request
    from jaxconv.bench.step import compile_step

    model, size, batch = spec
    compiled, facts = {}, {}
    for name, options in variants.items():
        try:
            compiled[name] = compile_step(Request(model, batch_size=batch, image_size=size, dtype=dtype),
                                          options or None)
        except Exception as e:
            if not compiled or not _refused(e):
                raise
            facts[name] = {"options": options, "error": str(e).splitlines()[0][:300]}
            continue
        hlo = compiled[name].executable.as_text()
        facts[name] = {"options": options, "compile_s": round(compiled[name].compile_s, 2),
                       "ynn_fusions": len(re.findall(r"^\s*(?:ROOT )?%ynn_fusion[.0-9]* = ", hlo, re.M)),
                       "convolutions": hlo.count(" convolution("),
                       "cudnn_convolutions": hlo.count('custom_call_target="__cudnn$conv'),  # GPU: via cuDNN
                       "fusions": len(re.findall(r"= \S+ fusion\(", hlo))}
        memory = compiled[name].executable.memory_analysis()  # XLA's buffer assignment: the step's scratch
        if memory is not None:
            facts[name]["temp_mib"] = round(memory.temp_size_in_bytes / 2**20, 1)
    times = time_alternately(compiled, rounds, steps, facts)
    baseline = statistics.median(times[next(iter(times))])
    for name in compiled:  # the baseline is the first variant, which compiled
        facts[name]["speedup"] = round(baseline / statistics.median(times[name]), 3)
    return {"model": model, "image_size": size, "batch_size": batch, "rounds": rounds, "steps": steps, **facts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", type=parse_spec, metavar="SPEC", help="MODEL:IMAGE_SIZE:BATCH")
    parser.add_argument("--variant", action="append", type=parse_variant, required=True, metavar="VARIANT",
                        help="NAME=OPTION=VALUE, at least two variants (repeat the flag)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per variant and round (default 10)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    args = parser.parse_args(argv)
    variants: dict[str, dict[str, str | bool | int]] = {}
    for name, key, value in args.variant:
        variants.setdefault(name, {})
        if key is not None:
            variants[name][key] = value
    if len(variants) < 2:
        parser.error("give at least two variants to compare (--variant NAME=OPTION=VALUE, repeated)")
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    apply_default_xla_flags()
    from jaxconv.bench.common import BenchError

    for spec in args.specs:
        try:
            print(json.dumps(measure(spec, variants, args.rounds, args.steps, args.dtype)), flush=True)
        except BenchError as e:
            print(f"bench_xla_options.py: error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # XLA refused the first variant's options
            if not _refused(e):
                raise
            print(f"bench_xla_options.py: error: XLA refused an option: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
