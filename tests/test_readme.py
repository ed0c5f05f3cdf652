"""The README stays true: its model table is current and CI runs its test command."""

from __future__ import annotations

import pathlib
import re
import sys

import pytest

from conftest import cached_summary

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import update_readme  # noqa: E402

# Shares the session cache of model summaries with test_analysis (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("summaries")


def test_model_table_is_current():
    text = (ROOT / "README.md").read_text()
    expected = update_readme.replace_table(text, update_readme.render(summarize=cached_summary))
    assert text == expected, "README.md's model table is stale: run python scripts/update_readme.py"


def test_the_counts_jaxconv_list_reads_are_current():
    from jaxconv.analysis import counts

    assert counts.PATH.read_text() == counts.render(counts.snapshot(cached_summary)), \
        "src/jaxconv/analysis/counts.json is stale: run python scripts/update_readme.py"


def test_config_key_table_is_current():
    text = (ROOT / "README.md").read_text()
    expected = update_readme.replace_table(text, update_readme.render_keys(), update_readme.KEYS_START,
                                           update_readme.KEYS_END)
    assert text == expected, "README.md's config key table is stale: run python scripts/update_readme.py"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(python3 -m venv .*)$", quickstart, flags=re.MULTILINE)
    assert len(commands) == 2, "the quickstart has two commands: the main job and the test suite"
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
