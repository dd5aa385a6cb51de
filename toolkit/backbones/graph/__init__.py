from toolkit.backbones.graph import gcn  # noqa: F401
