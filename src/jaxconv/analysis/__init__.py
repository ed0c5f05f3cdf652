"""Analysis from shapes: parameters, MACs, activations, receptive fields; BatchNorm folding."""

from jaxconv.analysis.summary import FORMATS, LayerSummary, ModelSummary, format_summary, summary

__all__ = ["FORMATS", "LayerSummary", "ModelSummary", "format_summary", "summary"]
