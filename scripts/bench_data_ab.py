"""The input pipeline of two source trees, timed alternately in one run (a shared, noisy machine is
compared as ratios): `jaxconv bench MODEL --mode data` from tree A, then from tree B, ROUNDS times.

    git worktree add --detach /tmp/before <commit>
    python scripts/bench_data_ab.py /tmp/before/src src --rounds 3 --cores 0 -- resnet50 --batch-size 64

``--cores`` pins both to those CPUs (``taskset -c``), e.g. ``0`` for a per-core figure. Prints one
JSON line per measurement, then the median B/A ratio of images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def measure(src: str, cores: str | None, bench_args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "jaxconv.cli", "bench", *bench_args, "--mode", "data", "--format", "json"]
    if cores is not None:
        command = ["taskset", "-c", cores, *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="source folder A (holding the jaxconv package)")
    parser.add_argument("b", help="source folder B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", help="CPUs for taskset -c (default: all)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.bench_args = argv[split + 1:]  # `jaxconv bench` arguments, the model first
    ratios = []
    for round_ in range(args.rounds):
        rates = {}
        for name, src in (("A", args.a), ("B", args.b)):
            result = measure(src, args.cores, args.bench_args or ["resnet50"])
            rates[name] = result["images_per_sec"]
            print(json.dumps({"tree": name, "src": src, "round": round_, "cores": args.cores or "all",
                              **{k: result[k] for k in ("recipe", "batch_size", "host_cpus", "images_per_sec",
                                                        "images_per_sec_per_core", "source")
                                 if k in result}}), flush=True)
        ratios.append(rates["B"] / rates["A"])
    print(json.dumps({"ratio_b_over_a_median": round(statistics.median(ratios), 3),
                      "ratios": [round(r, 3) for r in ratios]}))


if __name__ == "__main__":
    main()
