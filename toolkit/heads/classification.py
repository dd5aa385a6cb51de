"""Classification head: global average pooling, dropout, a softmax dense layer."""

from keras import layers


def classification_head(features, num_classes, dropout=0.2, name="classification"):
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(features)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    # float32 probabilities even under mixed precision, so int8 export calibrates on real ranges.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=f"{name}_probs")(x)
