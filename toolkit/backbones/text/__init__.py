from toolkit.backbones.text import rnn, transformer  # noqa: F401
