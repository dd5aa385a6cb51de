"""Export: SavedModel and LiteRT conversion, verification on the interpreter, benchmarks, reports.

The run-folder format (file names, atomic writes, `Run.load`) is `toolkit.runs`, below every layer."""
