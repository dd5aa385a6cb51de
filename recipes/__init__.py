"""Recipes: one short script per task (data + backbone + head + schedule), run by `toolkit run`."""
