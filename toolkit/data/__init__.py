"""Data: TFDS builders for embedded datasets, readers for real ones, augmentation, pipelines."""


def prefetched(dataset, buffer_size=None):
    """The last step of every tf.data pipeline the toolkit trains or scores on: prefetch, with tf.data's
    autotuning thread turned off.

    Why our own step: deleting an iterator waits for that thread, which sleeps in periods that grow to
    60 s, and Keras drops the previous epoch's iterator as each epoch starts. Inside `model.fit` the
    wait stalled whole epochs with both cores idle: 18-30 s in the generation recipe, 40-60 s in about
    one epoch of three in the vision recipes (a 42 s gap before the second epoch of a 100-s fit on the
    segmentation pipeline, 0.5 s with this option; benchmarks/RESULTS.md, issues 17 and 18).
    What autotuning would tune stays sensible without it: a map with AUTOTUNE runs as many calls at
    once as there are cores, and prefetch(AUTOTUNE) keeps growing its buffer on its own (its legacy
    autotuner ignores the option). buffer_size: None for AUTOTUNE."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE if buffer_size is None else buffer_size).with_options(options)
