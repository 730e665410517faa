"""Artifacts of the subcommands: atomic files, CSV logs, and the folder each process writes.

Every artifact is written under a temporary name in its own folder and
renamed into place (``os.replace``), so a reader (or an interrupted run) never
sees a half-written file. Temporary names start with ``.`` and hold
``TEMP_MARK``; a run removes those an earlier, killed run left behind
(``remove_stale_temporaries``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import warnings

import numpy as np

#: Marks temporary files and folders (``.NAME.tmp-PID.EXT``).
TEMP_MARK = ".tmp-"


def prepare_output_dir(path):
    """Makes ``--output_dir`` and checks that files can be written there.

    Raises:
        ValueError: naming ``--output_dir`` and ``path``: it is a file, or it
            cannot be made or written to (the system's reason quoted).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"--output_dir={path} is a file; expected a folder (or a path where one can be "
            "made): pass another --output_dir."
        )
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-check{TEMP_MARK}{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(
            f"--output_dir={path}: cannot write there ({reason}); pass an --output_dir you can "
            "write to."
        ) from None


def temporary_path(path):
    """A temporary sibling of ``path`` that keeps its extension.

    The extension stays last because savers pick the format from it
    (``.keras``, ``.h5``, ``.png``).
    """
    folder, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    return os.path.join(folder, f".{stem}{TEMP_MARK}{os.getpid()}{extension}")


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def replace(source, destination):
    """Moves ``source`` (file or folder) to ``destination``, replacing it.

    A file replaces a file atomically. A folder (SavedModel) cannot replace a
    non-empty folder in one rename, so the old one is renamed aside first and
    deleted after: ``destination`` is either the old or the new complete
    folder, or briefly absent, never a mix.
    """
    if os.path.isdir(destination) and not os.path.islink(destination):
        aside = temporary_path(destination) + ".old"
        _remove(aside)
        os.replace(destination, aside)
        os.replace(source, destination)
        _remove(aside)
    else:
        if os.path.isdir(source) and os.path.lexists(destination):
            os.remove(destination)
        os.replace(source, destination)


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path to write; renames it to ``path`` on success.

    On an exception the temporary file is deleted and ``path`` is untouched.

    Example:
        >>> with atomic_output("out/model.keras") as tmp:
        ...     model.save(tmp)
    """
    path = os.fspath(path)
    tmp = temporary_path(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    replace(tmp, path)


def write_text(path, text):
    """Writes ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def write_json(path, data):
    """Writes ``data`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


def save_keras_model(model, path):
    """``model.save(path)`` through a temporary file (format from the extension).

    A SavedModel folder of a one-input, one-output model holds the layers'
    configs and one serving signature (``serving_default``: the model's input
    name in, its output name out), not a trace of every layer: Keras reloads
    it from the configs (inside ``quantize_scope()`` for a QAT model), and a
    QAT MobileNetV2 writes in about a quarter of the time and reads in a
    third. Other models are saved with tf_keras' defaults.
    """
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # HDF5 is chosen on purpose for QAT models (.keras does not reload them).
        warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
        if path.endswith((".keras", ".h5")):
            model.save(tmp)
        elif len(model.inputs) == 1 and len(model.outputs) == 1:
            model.save(
                tmp, save_format="tf", save_traces=False, signatures=_serving_signature(model)
            )
        else:
            model.save(tmp, save_format="tf")
    return path


def _serving_signature(model):
    """The whole model's inference call, as SavedModel's ``serving_default``."""
    import tensorflow as tf  # the file helpers themselves run without it

    (name,) = model.input_names
    spec = tf.TensorSpec([None, *model.input_shape[1:]], model.inputs[0].dtype, name=name)
    (output,) = model.output_names

    @tf.function(input_signature=[spec])
    def serve(inputs):
        return {output: model(inputs, training=False)}

    return {"serving_default": serve}


def remove_stale_temporaries(folder):
    """Deletes the temporary files an interrupted run left under ``folder``."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for root, dirs, files in os.walk(folder):
        for name in list(dirs) + files:
            if name.startswith(".") and TEMP_MARK in name:
                path = os.path.join(root, name)
                _remove(path)
                removed.append(path)
                if name in dirs:
                    dirs.remove(name)
    return removed


def read_csv_columns(path):
    """A CSVLogger file as ``{column: [values]}`` (integers as int, numbers as float)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for row in rows:
        for key, value in row.items():
            for parse in (int, float):
                try:
                    value = parse(value)
                    break
                except (TypeError, ValueError):
                    pass
            columns.setdefault(key, []).append(value)
    return columns


def keep_csv_epochs_before(path, epoch):
    """Drops the rows of epochs >= ``epoch`` from a CSVLogger file.

    A run killed after logging an epoch but before backing it up repeats that
    epoch when resumed; without this the CSV would list it twice.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if row and int(float(row[0])) < epoch]
    if len(kept) == len(body):
        return
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(kept)


def is_chief(strategy):
    """Whether this process writes the artifacts (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type in (None, "chief"):
        return True
    if task_type == "worker":
        cluster = resolver.cluster_spec().as_dict()
        return "chief" not in cluster and resolver.task_id == 0
    return False


@contextlib.contextmanager
def artifact_folder(options, strategy):
    """The folder this process writes its own files to.

    The chief writes to ``options.output_dir``. Other workers of a
    multi-worker run must still save (saving reads variables with collective
    ops that every worker joins), so they write to a private folder under it,
    deleted at the end, as Keras' own callbacks do.
    """
    os.makedirs(options.output_dir, exist_ok=True)
    if is_chief(strategy):
        remove_stale_temporaries(options.output_dir)
        yield options.output_dir
        return
    resolver = strategy.cluster_resolver
    # Not named with TEMP_MARK: the chief removes stale temporaries when it
    # starts, which may be after this worker created its folder.
    private = os.path.join(
        options.output_dir, f".worker-{resolver.task_type}-{resolver.task_id}-scratch"
    )
    os.makedirs(private, exist_ok=True)
    try:
        yield private
    finally:
        shutil.rmtree(private, ignore_errors=True)
