"""Tasks: backbone + head -> a functional keras.Model, with its loss, metric and scoring.

Every task module registers one spec (`toolkit.tasks.registry`); importing this package imports them
all, in dependency order, so `get(name)` knows every task and their custom layers are registered with
Keras before a `.keras` file is loaded.
"""

from toolkit.tasks.registry import (  # noqa: F401
    DecoderTask, Task, backbone_of, for_recipe, get, names, recipes, register, warmup_cosine,
)  # fmt: skip
from toolkit.tasks import decoding  # noqa: F401,E402
from toolkit.tasks import classification, text_classification, node_classification  # noqa: F401,E402
from toolkit.tasks import detection, segmentation, multitask  # noqa: F401,E402
from toolkit.tasks import translation, language_model  # noqa: F401,E402
