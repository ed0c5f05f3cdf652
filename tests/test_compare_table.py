"""`jaxconv compare`'s table of the ILSVRC lineage: the published figures reproduced.

In the summaries group, where the same models' summaries are already cached (test_models, test_analysis).
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from conftest import cached_summary
from jaxconv.compare import ILSVRC_MODELS, compare_rows, format_rows, published

pytestmark = pytest.mark.xdist_group("summaries")


def summarize(name, size):
    return cached_summary(name, image_size=size)


@pytest.fixture(scope="module")
def ilsvrc_rows():
    return compare_rows(ILSVRC_MODELS, summarize=summarize)


def test_the_default_table_is_the_lectures_lineage_with_published_counts_reproduced(ilsvrc_rows):
    assert [r["model"] for r in ilsvrc_rows] == list(ILSVRC_MODELS)
    for row in ilsvrc_rows:
        assert row["published_params"] == row["params"], row["model"]
        if row["published_gmacs"] is not None:
            assert row["gmacs"] == pytest.approx(row["published_gmacs"], abs=5e-4), row["model"]
    by_name = {r["model"]: r for r in ilsvrc_rows}
    # The lectures: "Only 5 million parameters! 12x less than AlexNet, 27x less than VGG-16" (GoogLeNet,
    # counted here with its FC-free head: 7.0M, hence 8.9x and 19.8x for these exact networks).
    assert by_name["alexnet"]["params"] / by_name["googlenet"]["params"] == pytest.approx(8.91, abs=0.01)
    assert by_name["vgg16"]["params"] / by_name["googlenet"]["params"] == pytest.approx(19.77, abs=0.01)
    # ILSVRC winners' top-5 error falls 16.4 -> 11.7 -> 6.7 -> 3.57 along the lineage.
    errors = [by_name[n]["ilsvrc_top5_error"] for n in ("alexnet", "zfnet", "googlenet", "resnet152")]
    assert errors == [16.4, 11.7, 6.7, 3.57]
    # VGG16's forward pass: 15.2M values per image (the lecture's own rows sum to this; it prints 24M).
    assert by_name["vgg16"]["activation_mib"] * 2**20 / 4 == pytest.approx(15.2e6, rel=0.01)


def test_published_accuracies_are_torchvisions(ilsvrc_rows):
    assert published("resnet50").top1 == 76.130 and published("efficientnet_b0").top5 == 93.532
    text = format_rows(ilsvrc_rows, "md")
    assert "| resnet50 | 224 | 25.56 | 4.089 |" in text
    assert "published top-1 %" in text and "torchvision weights metadata" in text
    assert "inference img/s" not in text  # nothing was measured


def test_csv_and_json_carry_every_column(ilsvrc_rows):
    parsed = list(csv.DictReader(io.StringIO(format_rows(ilsvrc_rows, "csv"))))
    assert [r["model"] for r in parsed] == list(ILSVRC_MODELS)
    data = json.loads(format_rows(ilsvrc_rows, "json", device="cpu"))
    assert data["device"] == "cpu" and data["rows"][4]["params"] == 6_998_552
