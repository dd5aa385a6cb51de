"""Backbone Toolkit: one family of shared backbones for every recipe.

A backbone computes features; a task is a small head on it; a recipe is data + backbone + head +
schedule; an export is the same functional graph frozen for a runtime (see DESIGN.md).
"""

__version__ = "0.1.0"


def __getattr__(name):
    """`toolkit.export_model`, imported on first use: `import toolkit` stays free of TensorFlow."""
    if name == "export_model":
        from toolkit.export.api import export_model

        return export_model
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
