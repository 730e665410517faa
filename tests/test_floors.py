"""The package's floors: no subpackage imports one above it in the pipeline.

layers < models < search; data alone; export and quantization on top of
layers, models and data, never the search (the lean-model derivation lives
in models). Each package is imported in a fresh process, and the packages
above it must not be loaded.
"""

import subprocess
import sys

import pytest

ABOVE = {
    "layers": {"models", "data", "search", "export", "quantization", "cli", "study", "keras3"},
    "models": {"data", "search", "export", "quantization", "cli", "study", "keras3"},
    "data": {"layers", "models", "search", "export", "quantization", "cli", "study", "keras3"},
    "search": {"export", "quantization", "cli", "study", "keras3"},
    "export": {"search", "quantization", "cli", "study", "keras3"},
    "quantization": {"search", "export", "cli", "study", "keras3"},
}


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_a_package_loads_nothing_above_its_floor(package):
    script = (
        f"import sys, keras_metapool.{package}\n"
        "print(' '.join(sorted({m.split('.')[1] for m in sys.modules "
        "if m.startswith('keras_metapool.')})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = set(done.stdout.split())
    assert package in loaded  # the probe saw the import
    assert not loaded & ABOVE[package], sorted(loaded & ABOVE[package])
