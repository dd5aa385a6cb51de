"""Tasks: backbone + head -> a functional keras.Model, with its loss, metric and scoring."""
