"""Feature pyramid network (Lin et al. 2017): a top-down path with lateral 1x1 convolutions.

Coarse levels carry what an object is, fine levels where it is; the top-down path adds the
upsampled coarse level to each finer one, then a 3x3 convolution smooths the sum. Nearest-neighbour
upsampling, 1x1/3x3 convolutions, batch norm and ReLU all have int8 LiteRT kernels, so the neck
quantizes with the backbone. Detection reads the finest fused level; segmentation reads it too.
"""

from keras import layers

from toolkit.errors import ToolkitError


def fpn(pyramid, levels=("P2", "P3", "P4", "P5"), channels=64, name="fpn"):
    """{"P2": ..., "P5": ...} -> the same levels fused top-down, each with `channels` channels."""
    missing = [level for level in levels if level not in pyramid]
    if missing:
        raise ToolkitError(f"the backbone gives no pyramid level {', '.join(missing)} (it gives {', '.join(pyramid)})")
    ordered = sorted(levels, key=lambda level: int(level[1:]))  # fine to coarse
    fused, above = {}, None
    for level in reversed(ordered):
        x = layers.Conv2D(channels, 1, name=f"{name}_{level}_lateral")(pyramid[level])
        if above is not None:
            factor = x.shape[1] // above.shape[1]
            x = layers.Add(name=f"{name}_{level}_add")(
                [x, layers.UpSampling2D(factor, interpolation="nearest", name=f"{name}_{level}_up")(above)]
            )
        above = x
        # depthwise-separable smoothing: the finest level is large (stride 4), a full 3x3 conv there is costly
        y = layers.SeparableConv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_{level}_conv")(x)
        y = layers.BatchNormalization(name=f"{name}_{level}_bn")(y)
        fused[level] = layers.ReLU(name=f"{name}_{level}_relu")(y)
    return fused
