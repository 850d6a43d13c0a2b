"""Figures. Every function returns a `matplotlib.figure.Figure` (built without pyplot, so no
global figure state and nothing to close) and never shows it; most accept `ax=` to draw into an
existing axes. Nothing outside this package imports matplotlib."""

from typing import Any

from superpose import _deprecation as deprecation
from superpose.plot.attention import (
    attention_head,
    attention_heads,
    cross_attention,
    head_scores_heatmap,
)
from superpose.plot.diffing import activations_over_text, decoder_norm_ratios, delta_spectra
from superpose.plot.dimensionality import dimensionality_scatter, dimensions_per_feature_curve
from superpose.plot.features import feature_view, loss_recovered_bars
from superpose.plot.geometry import (
    angle_comparison,
    angle_histograms,
    capacity_curves,
    optimizer_history,
)
from superpose.plot.jl import distortion_histogram, distortion_vs_k
from superpose.plot.phase import phase_diagram
from superpose.plot.sae import (
    decoder_vs_true,
    frontier,
    latent_density,
    max_cos_histogram,
    sae_training_curves,
)
from superpose.plot.toy import feature_bars, feature_directions, gram_heatmaps
from superpose.plot.training import loss_curves

__all__ = [
    "attention_head", "attention_heads", "cross_attention", "head_scores_heatmap",
    "dimensionality_scatter", "dimensions_per_feature_curve", "feature_bars",
    "feature_directions", "gram_heatmaps", "loss_curves", "phase_diagram",
    "angle_comparison", "angle_histograms", "capacity_curves", "optimizer_history",
    "distortion_histogram", "distortion_vs_k", "feature_view", "loss_recovered_bars",
    "decoder_vs_true", "frontier", "latent_density", "max_cos_histogram", "sae_training_curves",
    "activations_over_text", "decoder_norm_ratios", "delta_spectra",
]

# Renamed so that a name says what comes back (issue 12): the old names work for one release.
_RENAMED = {"attention_patterns": ("attention_heads", attention_heads,
                                   "gpt.attention_patterns is the tensor it draws"),
            "angle_histogram": ("angle_histograms", angle_histograms,
                                "geometry.angle_histogram is the counts it draws")}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new, func, why = _RENAMED[name]
        deprecation.warn(f"plot.{name} is now plot.{new} ({why})", stacklevel=3)
        return func
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
