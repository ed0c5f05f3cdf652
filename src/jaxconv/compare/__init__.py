"""The ILSVRC comparison: models side by side (`jaxconv compare`) and runs gathered (`jaxconv report`)."""

from jaxconv.compare.published import ILSVRC_MODELS, MODERN_MODELS, Published, published, published_models
from jaxconv.compare.runs import Run, RunError, find_runs, load_run
from jaxconv.compare.table import FORMATS, compare_rows, format_rows

__all__ = [
    "FORMATS", "ILSVRC_MODELS", "MODERN_MODELS", "Published", "published_models", "Run", "RunError",
    "compare_rows", "find_runs", "format_rows", "load_run", "published",
]
