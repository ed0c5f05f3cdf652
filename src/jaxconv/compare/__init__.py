"""The ILSVRC comparison: models side by side (`jaxconv compare`) and runs gathered (`jaxconv report`)."""

from jaxconv.compare.published import ILSVRC_MODELS, PUBLISHED, Published, published
from jaxconv.compare.runs import Run, RunError, find_runs, load_run
from jaxconv.compare.table import FORMATS, compare_rows, format_rows

__all__ = [
    "FORMATS", "ILSVRC_MODELS", "PUBLISHED", "Published", "Run", "RunError",
    "compare_rows", "find_runs", "format_rows", "load_run", "published",
]
