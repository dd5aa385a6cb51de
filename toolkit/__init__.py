"""Backbone Toolkit: one family of shared backbones for every recipe.

A backbone computes features; a task is a small head on it; a recipe is data + backbone + head +
schedule; an export is the same functional graph frozen for a runtime (see DESIGN.md).
"""

__version__ = "0.1.0"
