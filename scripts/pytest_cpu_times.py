"""A pytest plugin that records each test's CPU time (its worker's, all threads, plus its child processes'),
beside its wall time: under `pytest -n 2` wall times mislead, a test beside a multi-threaded compile or a
subprocess test running 2-7x its own cost. Writes one TSV per worker process.

    PYTHONPATH=scripts python -m pytest -n 2 --dist loadgroup -p pytest_cpu_times
    cat /tmp/pytest_cpu_times_*.tsv | sort -rn | head -30     # CPU s, wall s, test

(JAXCONV_CPU_TIMES_DIR sets the folder, /tmp by default.)
"""

from __future__ import annotations

import os
import resource
import time

_started: dict[str, tuple[float, float]] = {}
_rows: list[tuple[float, float, str]] = []


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def pytest_runtest_setup(item):
    _started[item.nodeid] = (_cpu(), time.perf_counter())


def pytest_runtest_logfinish(nodeid, location):
    if nodeid in _started:
        cpu, wall = _started.pop(nodeid)
        _rows.append((_cpu() - cpu, time.perf_counter() - wall, nodeid))


def pytest_sessionfinish(session):
    if not _rows:
        return
    folder = os.environ.get("JAXCONV_CPU_TIMES_DIR", "/tmp")
    with open(os.path.join(folder, f"pytest_cpu_times_{os.getpid()}.tsv"), "w", encoding="utf-8") as f:
        f.writelines(f"{cpu:.2f}\t{wall:.2f}\t{nodeid}\n" for cpu, wall, nodeid in _rows)
