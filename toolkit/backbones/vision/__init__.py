from toolkit.backbones.vision import applications, edgenet, hub, resnet  # noqa: F401
