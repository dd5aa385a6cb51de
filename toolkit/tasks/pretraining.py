"""Dense pretraining of a vision backbone: what every pyramid level sees, per cell, on scenes.

The backbone learns Fashion-MNIST items at the scales and places they take in scenes: for each cell
of P2..P5 (strides 4..32) a 1x1 softmax probe predicts the share of each class (background
included) among the cell's pixels, from the segmentation mask pooled to that stride. Linear probes
on every level put the garment's identity and extent into the features themselves, where the FPN
necks of detection and segmentation read them; the probes are dropped and the backbone becomes a
preset (toolkit.backbones.presets). Not a registered Task: it exports no deployable model.
"""

import keras

from toolkit import backbones
from toolkit.data import prefetched
from toolkit.tasks import registry

LEVELS = ("P2", "P3", "P4", "P5")


def build(backbone="resnet", input_shape=(128, 128, 1), num_classes=11, levels=LEVELS, **backbone_options):
    """image -> backbone (a nested model) -> {level: per-cell class shares (softmax)} for each level."""
    backbones.require_kind(backbone, "vision")
    feature_model = backbones.get(backbone, input_shape, **backbone_options)
    inputs = keras.Input(input_shape, name="image")
    pyramid = feature_model(inputs)
    outputs = {
        level: keras.layers.Conv2D(num_classes, 1, activation="softmax", name=f"probe_{level}")(pyramid[level])
        for level in levels
    }
    return keras.Model(inputs, outputs, name="dense_pretraining")


def targets(masks, num_classes, levels=LEVELS):
    """Segmentation masks (B, H, W, 1) of class + 1 -> {level: (B, H/2^n, W/2^n, num_classes) class
    shares per cell} (average pooling of the one-hot mask; 'same' padding as the backbone's strides)."""
    import tensorflow as tf

    one_hot = tf.one_hot(tf.cast(masks[..., 0], tf.int32), num_classes)
    found = {}
    for level in levels:
        stride = 2 ** int(level[1])
        found[level] = tf.nn.avg_pool2d(one_hot, stride, stride, "SAME")
    return found


def batches(scenes, batch_size, num_classes, levels=LEVELS):
    """(image, mask) scenes -> batches of (float image, {level: shares}), prefetched."""
    import tensorflow as tf

    return prefetched(
        scenes.batch(batch_size, drop_remainder=False).map(
            lambda image, mask: (tf.cast(image, tf.float32), targets(mask, num_classes, levels))
        )
    )


def compile(model, learning_rate=3e-3, total_steps=1000, weight_decay=1e-4):
    """AdamW with warm-up into cosine decay (every task's schedule); cross-entropy against the class
    shares on each level, equally weighted; accuracy of the majority class per cell."""
    levels = list(model.output)
    model.compile(
        optimizer=keras.optimizers.AdamW(
            registry.warmup_cosine(learning_rate, total_steps), weight_decay=weight_decay, global_clipnorm=10.0
        ),
        loss={level: keras.losses.CategoricalCrossentropy() for level in levels},
        metrics={level: [keras.metrics.CategoricalAccuracy(name="accuracy")] for level in levels},
    )
    return model
