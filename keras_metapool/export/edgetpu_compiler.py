"""``edgetpu_compiler``, where it is installed: run it, and read its log as an ``EdgeTPUReport``."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

from keras_metapool.export.edgetpu import MAPPED, EdgeTPUReport, OpReport

__all__ = ["parse_edgetpu_compiler_log", "run_edgetpu_compiler"]

_TABLE_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$")
_TABLE_ROW = re.compile(r"^\s*(\S+)\s+(\d+)\s+(\S.*?)\s*$")
_SUBGRAPHS = re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)")


def parse_edgetpu_compiler_log(text, path=""):
    """Parses ``edgetpu_compiler``'s output or ``*_edgetpu.log`` into a report.

    The compiler prints (with ``--show_operations``) and writes to its log a
    table::

        Operator                       Count      Status

        CONV_2D                        35         Mapped to Edge TPU
        HARD_SWISH                     2          Operation not supported

    one row per (operator, status); and, on stdout, ``Number of Edge TPU
    subgraphs: N``.

    Args:
        text: The compiler's stdout or its log file's contents.
        path: The model the log is about (kept in the report).

    Returns:
        An ``EdgeTPUReport`` with ``source="edgetpu_compiler"``; its ops carry
        no index (the log gives counts, not positions).

    Raises:
        ValueError: if ``text`` holds no Operator/Count/Status table.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _TABLE_HEADER.match(line)), None)
    if start is None:
        raise ValueError(
            "No 'Operator Count Status' table in the edgetpu_compiler log"
            + (f" for {path!r}" if path else "")
            + "; expected the output of `edgetpu_compiler --show_operations` or its "
            "*_edgetpu.log file."
        )
    ops = []
    for line in lines[start + 1 :]:
        if not line.strip():
            if ops:
                break  # the table ends at the first blank line after its rows
            continue
        match = _TABLE_ROW.match(line)
        if not match:
            break
        name, count, status = match.group(1), int(match.group(2)), match.group(3)
        reason = "" if status == MAPPED else status
        ops.extend([OpReport(index=None, name=name, status=status, reason=reason)] * count)
    subgraphs = _SUBGRAPHS.search(text)
    if subgraphs:
        tpu_subgraphs = int(subgraphs.group(1))
    else:
        tpu_subgraphs = 1 if any(op.mapped for op in ops) else 0
    return EdgeTPUReport(
        path=os.fspath(path),
        ops=tuple(ops),
        source="edgetpu_compiler",
        tpu_subgraphs=tpu_subgraphs,
        log=text,
    )


def run_edgetpu_compiler(tflite_path, output_dir=None, timeout=600, compiler="edgetpu_compiler"):
    """Runs Coral's ``edgetpu_compiler`` on a model and parses its log.

    Args:
        tflite_path: The full-integer ``.tflite`` to compile.
        output_dir: Folder for ``<name>_edgetpu.tflite`` and ``.log``
            (default: the model's folder). Must exist.
        timeout: Seconds before the compiler is stopped.
        compiler: Name or path of the compiler executable.

    Returns:
        An ``EdgeTPUReport`` (``source="edgetpu_compiler"``) whose
        ``compiled_path`` is the compiled model.

    Raises:
        FileNotFoundError: if the compiler is not on PATH (it installs only
            from Coral's apt repository; ``edgetpu_report`` predicts the
            mapping without it), or the model or ``output_dir`` is missing.
        RuntimeError: if the compiler fails (its output is in the message).
    """
    executable = shutil.which(compiler)
    if executable is None:
        raise FileNotFoundError(
            f"{compiler!r} is not on PATH. It installs from Coral's apt repository "
            "(https://coral.ai/docs/edgetpu/compiler/); without it, edgetpu_report() "
            "predicts the mapping from the documented rules."
        )
    tflite_path = os.fspath(tflite_path)
    if not os.path.isfile(tflite_path):
        raise FileNotFoundError(f"No such TFLite file: {tflite_path!r}.")
    output_dir = os.fspath(output_dir) if output_dir is not None else None
    output_dir = output_dir or os.path.dirname(os.path.abspath(tflite_path))
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"output_dir {output_dir!r} does not exist.")
    command = [executable, "--show_operations", "--out_dir", output_dir, tflite_path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    output = done.stdout + ("\n" + done.stderr if done.stderr else "")
    if done.returncode != 0:
        raise RuntimeError(
            f"edgetpu_compiler failed on {tflite_path!r} (exit status {done.returncode}):\n"
            f"{output.strip()}"
        )
    stem = os.path.splitext(os.path.basename(tflite_path))[0]
    log_path = os.path.join(output_dir, f"{stem}_edgetpu.log")
    text = done.stdout
    if not _has_table(text) and os.path.isfile(log_path):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            # The log has the table; stdout has the subgraph count.
            text = f.read() + "\n" + done.stdout
    report = parse_edgetpu_compiler_log(text, tflite_path)
    compiled = os.path.join(output_dir, f"{stem}_edgetpu.tflite")
    return dataclasses.replace(report, compiled_path=compiled if os.path.isfile(compiled) else None)


def _has_table(text):
    return any(_TABLE_HEADER.match(line) for line in text.splitlines())
