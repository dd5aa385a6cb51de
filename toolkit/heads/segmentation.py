"""A semantic-segmentation head on the FPN neck, and the arg-max layer that exports a class map.

Why an FPN decoder and not DeepLabV3+'s ASPP (Kirillov et al. 2019, "Panoptic FPN", semantic branch):
- The FPN is already the neck of detection (necks/fpn.py): its finest fused level (stride 4)
  holds every coarser level added top-down, which is the low-level skip DeepLabV3+ adds by hand.
  Reading that same level lets the multi-task model feed one neck to both heads, so the second
  head costs a few separable convolutions instead of a second decoder.
- Our objects are 24-64 px on 128 px canvases: P5 (stride 32) already sees a whole object, so
  ASPP's atrous rates (6/12/18 at stride 16) would look far past the canvas for no gain, and
  dilated convolutions are slower than plain ones in LiteRT's int8 kernels.
- Everything is a (separable) convolution, batch norm, ReLU and bilinear resize: int8 kernels exist
  for all of them, so the head quantizes with the backbone.

The head predicts logits at stride 4 and resizes them bilinearly to the input size, so the loss and
the exported arg-max work per input pixel (thin items such as sandals lose detail at stride 4).
"""

import keras
from keras import layers, ops


def segmentation_head(features, num_classes, channels=64, depth=2, upsample=4, name="segmentation"):
    """(B, h, w, D) stride-`upsample` features -> (B, h * upsample, w * upsample, num_classes) float32 logits."""
    x = features
    for i in range(depth):
        # depthwise-separable: at stride 4 a full 3x3 conv would cost more than the whole backbone
        x = layers.SeparableConv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    x = layers.Conv2D(num_classes, 1, name=f"{name}_logits")(x)
    if upsample > 1:
        x = layers.UpSampling2D(upsample, interpolation="bilinear", name=f"{name}_upsample")(x)
    return layers.Activation("linear", dtype="float32", name=name)(x)


@keras.saving.register_keras_serializable(package="toolkit")
class ClassMap(layers.Layer):
    """(B, H, W, classes) scores -> (B, H, W) uint8 class ids: the arg-max a device would otherwise
    run itself. ARG_MAX and CAST are LiteRT builtins (int8 included), so it stays in the file.

    On TensorFlow this calls tf.argmax itself: keras.ops.argmax on floats first maps -0.0 to -tiny
    (a JAX flush-to-zero fix, keras/src/backend/tensorflow/numpy.py argmax), computing the sign bit
    with tf.BitwiseAnd, which has no builtin LiteRT kernel; -0.0 against 0.0 never decides a class."""

    def call(self, scores):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.cast(tf.argmax(scores, axis=-1, output_type=tf.int32), tf.uint8)
        return ops.cast(ops.argmax(scores, axis=-1), "uint8")

    def compute_output_spec(self, scores):
        return keras.KerasTensor(scores.shape[:-1], dtype="uint8")
