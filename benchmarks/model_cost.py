"""Parameters and MACs of MobileNetV2 vs MobileNetV2MP, as a markdown table.

    python benchmarks/model_cost.py                  # widths 0.5, 0.75, 1.0 at 224x224
    python benchmarks/model_cost.py --alphas=0.35 --input_size=64 --output=cost.md

Counts come from ``keras_metapool.models.count_params`` / ``count_macs``
(analytic, per image; see that module for what a MAC includes). MobileNetV2
is ``tf_keras.applications.MobileNetV2`` itself, not our "none" variant.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from keras_metapool import keras  # noqa: E402
from keras_metapool.models import MobileNetV2MP, count_macs, count_params  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("alphas", ["0.5", "0.75", "1.0"], "Width multipliers to tabulate.")
flags.DEFINE_integer("input_size", 224, "Square input size.", lower_bound=32)
flags.DEFINE_integer("classes", 1000, "Classifier width.", lower_bound=1)
flags.DEFINE_string("output", None, "Also write the table to this markdown file.")

VARIANTS = (
    ("MobileNetV2 (keras.applications)", None),
    ("MobileNetV2MP paper, classic head", dict(meta_pooling="paper", head="classic")),
    ("MobileNetV2MP paper, paper head", dict(meta_pooling="paper", head="paper")),
    ("MobileNetV2MP search supernet", dict(meta_pooling="search")),
)


def build(alpha, options):
    shape = (FLAGS.input_size, FLAGS.input_size, 3)
    if options is None:
        return keras.applications.MobileNetV2(
            weights=None, alpha=alpha, input_shape=shape, classes=FLAGS.classes
        )
    return MobileNetV2MP(
        weights=None, alpha=alpha, input_shape=shape, classes=FLAGS.classes, **options
    )


def cost_table(alphas):
    """Markdown lines: one row per (alpha, variant)."""
    lines = [
        "| alpha | model | params | vs MobileNetV2 | MACs | vs MobileNetV2 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for alpha in alphas:
        base_params = base_macs = None
        for label, options in VARIANTS:
            model = build(alpha, options)
            params, macs = count_params(model), count_macs(model)
            keras.backend.clear_session()
            if options is None:
                base_params, base_macs = params, macs
                delta_p = delta_m = "—"
            else:
                delta_p = f"{100.0 * (params / base_params - 1):+.1f}%"
                delta_m = f"{100.0 * (macs / base_macs - 1):+.1f}%"
            lines.append(
                f"| {alpha:g} | {label} | {params / 1e6:.3f}M | {delta_p} | "
                f"{macs / 1e6:.1f}M | {delta_m} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main(argv):
    del argv
    alphas = [float(a) for a in FLAGS.alphas]
    header = (
        f"Input {FLAGS.input_size}x{FLAGS.input_size}, {FLAGS.classes} classes; "
        "MACs per image (convolutions, dense layers and SSP's gating products)."
    )
    text = "\n".join([header, ""] + cost_table(alphas)) + "\n"
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    app.run(main)
