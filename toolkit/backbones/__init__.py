"""The only place features are computed. `get(name, input_shape, **options)` builds any backbone.

Vision backbones map raw pixels (0..255) to {"P1": stride 2, ..., "P5": stride 32}; text
backbones map int32 token ids (0 = padding) to {"sequence": (B, T, D), "pooled": (B, D)}; graph
backbones map {"features": (B, N, F), "adjacency": (B, N, N)} to {"sequence": (B, N, D), "pooled"}.
"""

from toolkit.backbones import graph, text, vision  # noqa: F401  (registers the backbones)
from toolkit.backbones.flops import count_flops, count_params
from toolkit.backbones.presets import from_preset
from toolkit.backbones.presets import save as save_preset
from toolkit.backbones.registry import PYRAMID_LEVELS, entry, get, names, options, register, require_kind

__all__ = [
    "PYRAMID_LEVELS",
    "count_flops",
    "count_params",
    "entry",
    "from_preset",
    "get",
    "names",
    "options",
    "register",
    "require_kind",
    "save_preset",
]
