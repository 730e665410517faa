"""Export a model for the Coral Edge TPU: uint8 TFLite, mapping report, compiler, device.

    python examples/coral_export.py                 # trains a tiny model first, ~1 minute
    python examples/coral_export.py --image_size=32 --train_size=256 --epochs=1   # ~30 s
    python examples/coral_export.py --model=runs/train/model.keras      # `keras-metapool train`
    python examples/coral_export.py --model=runs/qat/qat_model          # `keras-metapool qat`
    python examples/coral_export.py --model=runs/keras_native/mobilenetv2mp_0.35_64.keras

What it does:

1. reads ``--model`` (a float ``.keras``/``.h5``, a QAT ``.h5`` loaded inside
   ``keras_metapool.quantize_scope()``, or a SavedModel folder; a search model
   whose points are all fixed is exported as its lean fixed model). Without
   ``--model`` it trains a tiny ``MobileNetV2MP(meta_pooling="paper")`` on
   Fashion-MNIST for ``--epochs``, so the example runs on its own;
2. ``keras_metapool.export.to_tflite(model, path, mode="edgetpu",
   representative_data=...)`` writes ``<output_dir>/<model name>_edgetpu.tflite``:
   full-integer int8 with uint8 input and output, batch 1 (static shapes), the
   activation ranges calibrated on ``--calibration_samples`` training images
   preprocessed exactly as the model's input ([-1, 1]). A float model is
   quantized after training here; a QAT model keeps the ranges it learned;
3. prints ``keras_metapool.export.edgetpu_report(path)``: which ops the Edge
   TPU compiler would map. **The compiler is not available on this machine**
   (it installs only from Coral's apt repository, which is out of reach here,
   and has no PyPI package): the report *predicts* the mapping from the
   documented Edge TPU requirements (op table and per-op limits, 8-bit
   tensors, static sizes, at most 3 innermost dimensions > 1, one partition:
   the first unmapped op and all ops after it run on the CPU). The compiler
   has the last word;
4. if ``edgetpu_compiler`` is on PATH (and ``--compile``, the default), runs
   ``edgetpu_compiler -s -o <output_dir>/compiled <model>_edgetpu.tflite``
   through ``keras_metapool.export.run_edgetpu_compiler`` and prints its log
   and the parsed report; the compiled model is
   ``<output_dir>/compiled/<model name>_edgetpu_edgetpu.tflite`` (the compiler
   appends ``_edgetpu``). Otherwise it prints the commands to run on a
   machine that has it;
5. prints the test accuracy of the Keras model and of the uint8 model run
   with LiteRT on this CPU (the same integer arithmetic as the Edge TPU, up
   to rounding), when the model's classes match the dataset's.

On your machine (x86-64 Debian/Ubuntu; the compiler does not run on ARM or
macOS: use a Debian container there), install the compiler from Coral's apt
repository and compile::

    curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
    echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" \\
        | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
    sudo apt-get update
    sudo apt-get install edgetpu-compiler
    edgetpu_compiler -s -o OUTDIR model_edgetpu.tflite

(Where ``apt-key`` no longer exists, on recent Debian and Ubuntu, store the
key with ``curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
sudo gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg`` and write the
source line as ``deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg]
https://packages.cloud.google.com/apt coral-edgetpu-stable main``.)

On the device (USB Accelerator, Dev Board, M.2/PCIe module): install the Edge
TPU runtime from the same repository (``sudo apt-get install
libedgetpu1-std``), then either pycoral (``python3 -m pip install
--extra-index-url https://google-coral.github.io/py-repo/ pycoral~=2.0``;
wheels for Python 3.6-3.9 only; ``pycoral.utils.edgetpu.make_interpreter(path)``)
or LiteRT (``pip install ai-edge-litert``) with the Edge TPU delegate::

    from ai_edge_litert.interpreter import Interpreter, load_delegate
    interpreter = Interpreter(
        "model_edgetpu_edgetpu.tflite",
        experimental_delegates=[load_delegate("libedgetpu.so.1")])

The script prints the full snippet, input quantization included. libedgetpu
was built and tested by Coral against tflite_runtime 2.5; loading it from a
recent LiteRT was not verified here (no Edge TPU on this machine).
"""

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data import load_dataset  # noqa: E402
from keras_metapool.export import (  # noqa: E402
    edgetpu_report,
    evaluate_tflite,
    run_edgetpu_compiler,
    to_tflite,
)

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model",
    None,
    "Trained model: .keras or .h5 (float, from `keras-metapool train`), a QAT .h5, or a "
    "SavedModel folder (`keras-metapool qat` writes qat_model/). Default: train a tiny "
    "'paper' model here.",
)
flags.DEFINE_string(
    "dataset",
    "fashion_mnist",
    "Data for calibration and evaluation, as keras_metapool.data.load_dataset names it: the "
    "data the model was trained on.",
)
flags.DEFINE_string("data_dir", None, "load_dataset's data_dir (tfds folder, IDX folder).")
flags.DEFINE_integer(
    "image_size", 64, "Input size of the model trained without --model.", lower_bound=32
)
flags.DEFINE_float("alpha", 0.35, "Width multiplier of the model trained without --model.")
flags.DEFINE_integer("train_size", 2000, "Training images without --model.", lower_bound=1)
flags.DEFINE_integer("epochs", 3, "Training epochs without --model.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size of training and evaluation.", lower_bound=1)
flags.DEFINE_integer(
    "calibration_samples", 128, "Training images that calibrate the int8 ranges.", lower_bound=1
)
flags.DEFINE_integer(
    "test_size", 500, "Test images for the LiteRT accuracy (0: skip).", lower_bound=0
)
flags.DEFINE_bool("compile", True, "Run edgetpu_compiler when it is on PATH.")
flags.DEFINE_string("output_dir", "runs/coral_export", "Where the .tflite files are written.")
flags.DEFINE_integer("seed", 0, "Random seed (weights, shuffling).")

INSTALL_COMPILER = """\
  # the Edge TPU compiler, x86-64 Debian/Ubuntu (Coral's apt repository)
  curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
  echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" \\
      | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
  sudo apt-get update
  sudo apt-get install edgetpu-compiler
  # (no apt-key on recent Debian/Ubuntu: see this script's docstring, signed-by)
  edgetpu_compiler -s -o {outdir} {model}
  # -> {compiled} and its .log (the Operator / Count / Status table)"""

RUN_ON_DEVICE = """\
  # on the device: the Edge TPU runtime, then LiteRT with the Edge TPU delegate
  sudo apt-get install libedgetpu1-std      # same Coral repository
  pip install ai-edge-litert numpy          # or pycoral (Python <= 3.9): make_interpreter(path)

  import numpy as np
  from ai_edge_litert.interpreter import Interpreter, load_delegate

  interpreter = Interpreter(
      "{compiled_name}",
      experimental_delegates=[load_delegate("libedgetpu.so.1")],
  )
  interpreter.allocate_tensors()
  input_details = interpreter.get_input_details()[0]     # uint8 {shape}
  output_details = interpreter.get_output_details()[0]
  scale, zero_point = input_details["quantization"]      # ({scale:.6g}, {zero_point}) here
  image = ...  # uint8 RGB, {size}x{size}: resized as in training
  x = image.astype(np.float32) / 127.5 - 1.0             # the model's input scaling, [-1, 1]
  q = np.clip(np.round(x / scale + zero_point), 0, 255).astype(np.uint8)
  interpreter.set_tensor(input_details["index"], q[np.newaxis])
  interpreter.invoke()
  out_scale, out_zero = output_details["quantization"]
  output = interpreter.get_tensor(output_details["index"])[0].astype(np.float32)
  probabilities = (output - out_zero) * out_scale
  print(probabilities.argmax())"""


def load_data(split, image_size, limit, training=False):
    """Batched ``(images, labels)`` of --dataset at the model's input size, and its info."""
    return load_dataset(
        FLAGS.dataset,
        split=split,
        image_size=image_size,
        batch_size=FLAGS.batch_size,
        training=training,
        seed=FLAGS.seed,
        data_dir=FLAGS.data_dir,
        limit=limit,
    )


def load_model(path):
    """A Keras model from a .keras/.h5 file or a SavedModel folder (QAT models too)."""
    if not os.path.exists(path):
        raise app.UsageError(f"--model: {path} does not exist.")
    if path.endswith(".keras"):
        return keras.models.load_model(path, compile=False)
    # A QAT model (.h5 or SavedModel) reloads only inside TF-MOT's scope;
    # float models do not mind it.
    with km.quantize_scope():
        return keras.models.load_model(path, compile=False)


def train_tiny_model():
    """A MobileNetV2MP "paper" model, trained for --epochs on --train_size images."""
    train, info = load_data("train", FLAGS.image_size, FLAGS.train_size, training=True)
    model = km.MobileNetV2MP(
        weights=None,
        meta_pooling="paper",  # SSP after blocks 6-16
        input_shape=(FLAGS.image_size, FLAGS.image_size, 3),
        alpha=FLAGS.alpha,
        classes=info.num_classes,
        batch_norm_momentum=0.9,  # short run: see MobileNetV2MP's docstring
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(f"No --model: training {model.name} on {info.num_examples} images", flush=True)
    model.fit(train, epochs=FLAGS.epochs, verbose=1 if sys.stdout.isatty() else 2)
    return model


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    model = load_model(FLAGS.model) if FLAGS.model else train_tiny_model()
    is_qat = any(type(layer).__name__.startswith("Quantize") for layer in model.layers)
    height, width = model.input_shape[1:3]
    if height is None or height != width:
        raise app.UsageError(
            f"The model's input is {model.input_shape}; the Edge TPU export needs a static, "
            "square input size (build it with input_shape=(size, size, 3))."
        )
    calibration, _ = load_data("train", height, FLAGS.calibration_samples)

    # -- Export and report -------------------------------------------------------
    path = os.path.join(FLAGS.output_dir, f"{model.name}_edgetpu.tflite")
    # strict=False: a model that does not map fully is still written and
    # reported (strict=True, the default, raises ExportValidationError).
    exported = to_tflite(model, path, mode="edgetpu", representative_data=calibration, strict=False)
    report = edgetpu_report(exported.path)  # == exported.edgetpu_report
    # ---------------------------------------------------------------------------
    details = exported.input
    print(
        f"\nWrote {exported.path}: {exported.size_bytes / 1024:.0f} KiB, {exported.num_ops} ops, "
        f"input {details.dtype} {list(details.shape)} (scale {details.scale:.6f}, zero point "
        f"{details.zero_point}), output {exported.output.dtype} {list(exported.output.shape)}"
    )
    print()
    print(report.format(verbose=True))
    print(f"mapped fraction {report.mapped_fraction:.3f}; all mapped: {report.all_mapped}")

    compiled_dir = os.path.join(FLAGS.output_dir, "compiled")
    stem = os.path.splitext(os.path.basename(exported.path))[0]
    compiled_path = os.path.join(compiled_dir, f"{stem}_edgetpu.tflite")
    if FLAGS.compile and shutil.which("edgetpu_compiler"):
        os.makedirs(compiled_dir, exist_ok=True)
        print(f"\nedgetpu_compiler is on PATH: compiling into {compiled_dir}")
        compiled = run_edgetpu_compiler(exported.path, compiled_dir)
        print(compiled.log.strip())  # the compiler's own words, Operator/Count/Status table
        print(
            f"\nparsed: {compiled.num_tpu_ops} ops on the Edge TPU, {compiled.num_cpu_ops} on "
            f"the CPU, {compiled.tpu_subgraphs} Edge TPU subgraph(s); predicted above: "
            f"{report.num_tpu_ops} / {report.num_cpu_ops}\ncompiled model: {compiled.compiled_path}"
        )
        report = compiled
        compiled_path = compiled.compiled_path or compiled_path
    else:
        why = "--nocompile" if not FLAGS.compile else "edgetpu_compiler is not on PATH"
        print(f"\n{why}: the report above is the offline prediction. On a machine with it:\n")
        print(
            INSTALL_COMPILER.format(
                outdir=compiled_dir, model=exported.path, compiled=compiled_path
            )
        )
    print(
        "\n"
        + RUN_ON_DEVICE.format(
            compiled_name=os.path.basename(compiled_path),
            shape=list(details.shape),
            scale=details.scale,
            zero_point=details.zero_point,
            size=height,
        )
    )

    if FLAGS.test_size:
        test, info = load_data("test", height, FLAGS.test_size)
        if info.num_classes == model.output_shape[-1]:
            labels = np.concatenate([y.numpy() for _, y in test])
            keras_accuracy = np.mean(model.predict(test, verbose=0).argmax(axis=1) == labels)
            result = evaluate_tflite(exported.path, test)
            kind = "Keras model (QAT)" if is_qat else "Keras model (float)"
            print(
                f"\nTest accuracy on {result.num_examples} {FLAGS.dataset} images:\n"
                f"  {kind:<34} {keras_accuracy:.4f}\n"
                f"  {'uint8 .tflite, LiteRT on this CPU':<34} {result.accuracy:.4f}  (median "
                f"{result.latency.median_ms:.2f} ms per image on the CPU, not the Edge TPU)"
            )
        else:
            print(
                f"\nNo accuracy: the model has {model.output_shape[-1]} classes, "
                f"{FLAGS.dataset} {info.num_classes}."
            )
    return 0 if report.all_mapped else 1


if __name__ == "__main__":
    app.run(main)
