"""Classification heads: pooled features -> dropout -> softmax dense. Images pool their feature
map first; text backbones already give a pooled vector."""

from keras import layers


def probabilities_head(pooled, num_classes, dropout=0.2, name="classification"):
    x = layers.Dropout(dropout, name=f"{name}_dropout")(pooled) if dropout else pooled
    # float32 probabilities even under mixed precision, so int8 export calibrates on real ranges.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=f"{name}_probs")(x)


def classification_head(features, num_classes, dropout=0.2, name="classification"):
    pooled = layers.GlobalAveragePooling2D(name=f"{name}_pool")(features)
    return probabilities_head(pooled, num_classes, dropout, name)
