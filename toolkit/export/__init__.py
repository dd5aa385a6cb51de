"""Export: SavedModel and LiteRT conversion, verification on the interpreter, run folders, reports."""
