"""Data: TFDS builders for embedded datasets, readers for real ones, augmentation, pipelines."""
