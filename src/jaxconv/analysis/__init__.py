"""Analysis from shapes: parameters, MACs, activations, receptive fields; BatchNorm folding."""

from jaxconv.analysis.batchnorm_folding import fold_batchnorm
from jaxconv.analysis.summary import FORMATS, LayerSummary, ModelSummary, format_summary, summary

__all__ = ["FORMATS", "fold_batchnorm", "LayerSummary", "ModelSummary", "format_summary", "summary"]
