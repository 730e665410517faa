"""What the subcommands print: progress lines, sizes, Markdown tables."""

import contextlib
import sys
import warnings


def keras_verbosity():
    """Keras ``verbose``: progress bars on a terminal, one line per epoch otherwise."""
    return 1 if sys.stdout.isatty() else 2


def say(text=""):
    """Prints a line now (progress lines must not wait for a buffer)."""
    print(text, flush=True)


@contextlib.contextmanager
def package_warnings_as_lines(stage, skip=()):
    """Prints keras_metapool's own warnings raised inside as ``STAGE: warning: MESSAGE``
    lines (no source path or code line), leaving out the categories in ``skip``; other
    libraries' warnings go on as they would."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:  # also when the block fails: what it warned still reaches the user
        shown = set()
        for warning in caught:
            key = (warning.category, str(warning.message), warning.filename, warning.lineno)
            if key in shown:  # a warning raised every step is shown once
                continue
            shown.add(key)
            if not warning.category.__module__.startswith("keras_metapool"):
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
            elif not issubclass(warning.category, tuple(skip)):
                print(f"{stage}: warning: {warning.message}", file=sys.stderr, flush=True)


def size_text(num_bytes):
    """``1.23 MiB`` / ``456.7 KiB``."""
    if num_bytes >= 1 << 20:
        return f"{num_bytes / (1 << 20):.2f} MiB"
    return f"{num_bytes / 1024:.1f} KiB"


def markdown_table(header, rows):
    """A Markdown table (list of lines) from a header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
