"""study_accuracy.png and study_cost.png."""

import os

from keras_metapool.study.plan import BASELINE, FLAGS, VARIANT_BY_KEY
from keras_metapool.study.stats import latency_ratio, variant_stats


def plot(groups, latency, variants):
    """study_accuracy.png (mean ± std per variant) and study_cost.png (vs MACs, latency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted(groups)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # NOTE: wide enough for the longest variant label beside each panel.
    label_inches = 0.065 * max(len(VARIANT_BY_KEY[v].label) for v in variants)
    figure, axes = plt.subplots(
        1,
        len(configs),
        figsize=((4.5 + label_inches) * len(configs), 0.45 * len(variants) + 1.8),
        squeeze=False,
    )
    for ax, config in zip(axes[0], configs):
        shown = [v for v in variants if v in groups[config]]
        for row, variant in enumerate(shown):
            s = variant_stats(groups[config][variant])
            ax.scatter([100 * a for a in s["accuracies"]], [row] * s["n"], marker="|", s=80,
                       color="lightgrey", zorder=2)  # fmt: skip
            ax.errorbar(100 * s["mean"], row, xerr=100 * (s["std"] or 0), fmt="o", capsize=4,
                        color=colors[row % len(colors)], zorder=3)  # fmt: skip
        base = groups[config].get(BASELINE)
        if base:
            ax.axvline(100 * variant_stats(base)["mean"], color="grey", linestyle=":")
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels([VARIANT_BY_KEY[v].label for v in shown], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("test accuracy % (mean ± std; ticks: seeds)")
        ax.set_title(config.title)
    figure.tight_layout()
    figure.savefig(
        os.path.join(FLAGS.output_dir, "study_accuracy.png"), dpi=110, bbox_inches="tight"
    )
    plt.close(figure)

    figure, axes = plt.subplots(len(configs), 2, figsize=(11, 4 * len(configs)), squeeze=False)
    for (ax_macs, ax_latency), config in zip(axes, configs):
        shown = [v for v in variants if v in groups[config]]
        for index, variant in enumerate(shown):
            s = variant_stats(groups[config][variant])
            style = dict(fmt="o", capsize=3, color=colors[index % len(colors)],
                         label=VARIANT_BY_KEY[variant].label)  # fmt: skip
            ax_macs.errorbar(s["macs"] / 1e6, 100 * s["mean"], yerr=100 * (s["std"] or 0), **style)
            ratio = latency_ratio(latency.get(config), variant, "float")
            if ratio is not None:
                ax_latency.errorbar(ratio, 100 * s["mean"], yerr=100 * (s["std"] or 0), **style)
        ax_macs.set_xlabel("MACs per image (M)")
        ax_latency.set_xlabel("float TFLite latency / MobileNetV2's")
        for ax in (ax_macs, ax_latency):
            ax.set_ylabel("test accuracy %")
            ax.set_title(config.title)
            ax.grid(alpha=0.3)
    figure.tight_layout()
    # NOTE: below the panels, where it hides no point (bbox_inches="tight" keeps it).
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
                  fontsize=8, frameon=False)  # fmt: skip
    figure.savefig(os.path.join(FLAGS.output_dir, "study_cost.png"), dpi=110, bbox_inches="tight")
    plt.close(figure)
