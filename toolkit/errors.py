"""The one error type users see: a clear, one-line message naming the culprit."""


class ToolkitError(Exception):
    """A problem with the user's input (a name, a file, a value) that they can fix.

    The CLI prints it as one line and exits non-zero; the Python API raises it as it is.
    """


def choose(kind, name, valid):
    """Returns `name` if it is one of `valid`, else raises an error that lists the valid ones."""
    if name not in valid:
        raise ToolkitError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")
    return name
