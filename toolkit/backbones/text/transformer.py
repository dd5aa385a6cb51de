"""A small Transformer encoder from KerasHub layers: the attention alternative to `birnn`.

Token + learned position embeddings, `depth` KerasHub TransformerEncoder blocks (the padding mask
follows token id 0 through them), and a masked mean over real tokens as "pooled".
"""

import keras
import keras_hub

from toolkit.backbones.registry import register
from toolkit.backbones.text.layers import PaddingMask


@register(
    "transformer", kind="text", provider="keras_hub", min_size=1,
    description="KerasHub TokenAndPositionEmbedding + TransformerEncoder blocks, masked mean pool",
)  # fmt: skip
def transformer(
    input_shape=(64,), vocabulary_size=8000, embedding_dim=128, depth=2, num_heads=4, intermediate_dim=256, dropout=0.1
):
    tokens = keras.Input(input_shape, dtype="int32", name="tokens")
    # The padding mask is passed explicitly (KerasHub's PositionEmbedding does not carry Keras masks).
    padding = PaddingMask(name="padding_mask")(tokens)
    x = keras.layers.Embedding(vocabulary_size, embedding_dim, name="token_embedding")(tokens)
    x = keras.layers.Add(name="embedding")(
        [x, keras_hub.layers.PositionEmbedding(input_shape[0], name="position_embedding")(x)]
    )
    for i in range(depth):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim, num_heads, dropout=dropout, name=f"transformer_encoder_{i}"
        )(x, padding_mask=padding)
    pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(x, mask=padding)
    return keras.Model(tokens, {"sequence": x, "pooled": pooled}, name="transformer")
