"""Which paired comparisons a study makes, their Holm families, and their tables."""

import numpy as np

from keras_metapool.study.plan import BASELINE, PER_SEED_VARIANTS, VARIANT_BY_KEY
from keras_metapool.study.stats import (
    by_seed,
    holm,
    on_every_seed,
    paired,
    paired_detectable,
    paired_power,
)

#: The effect the paired comparisons' power is stated for (accuracy, 1.5 points).
TARGET_EFFECT = 0.015
#: The fixed variants also compared with the parameter-matched MobileNetV2.
ENHANCED_VARIANTS = ("mp_paper", "mp_paper_open", "ssp_all", "se_paper", "exclude_local")

#: The baselines a searched child is also compared with: random architectures of
#: the space, with its number of enhancers, and random search at its compute.
RANDOM_BASELINES = ("random_arch", "random_matched", "random_searched")
#: How the search family's table names the fixed variant it picked.
BEST_FIXED = "best fixed variant"


def best_fixed_variant(groups_of_config):
    """The fixed-architecture variant with the highest mean accuracy, among those run
    on every seed any fixed variant has (so that the means are over the same seeds);
    None without one."""
    fixed = {v: by_seed(r) for v, r in groups_of_config.items() if v not in PER_SEED_VARIANTS}
    means = {v: np.mean(list(s.values())) for v, s in on_every_seed(fixed).items()}
    return max(means, key=means.get) if means else None


def paired_comparisons(groups_of_config):
    """The report's paired comparisons at one config, in two Holm-corrected families.

    The fixed family (``"fixed"``): every fixed-architecture variant against
    MobileNetV2, and each of ``ENHANCED_VARIANTS`` against the
    parameter-matched MobileNetV2 too. The search family (``"search"``): each
    searched child against MobileNetV2, and the ``searched`` child also
    against the parameter-matched MobileNetV2, :func:`best_fixed_variant`
    (marked ``BEST_FIXED`` in ``note``) and the random baselines
    (``RANDOM_BASELINES``). Each family is corrected on its own, as a study
    plans them: a search stage added to a finished fixed study leaves the
    fixed family's numbers as they were. Comparisons with a variant the
    study did not run are left out.

    Returns:
        A list of dicts: ``family``, ``variant``, ``against``, ``note``, and
        :func:`paired`'s fields (``diff``, ``low``, ``high``, ``p``, ``n``,
        ``std``) plus ``holm_p`` and ``power`` (to detect ``TARGET_EFFECT`` at
        the level Holm gives the family's smallest p-value, 0.05 / its
        comparisons).
    """
    ran = groups_of_config
    fixed = [v for v in ran if v not in PER_SEED_VARIANTS]
    pairs = [("fixed", v, BASELINE, "") for v in fixed if v != BASELINE]
    pairs += [("fixed", v, "param_matched", "") for v in ENHANCED_VARIANTS if v in fixed]
    pairs += [("search", v, BASELINE, "") for v in ("searched", "searched_inherited")]
    if "searched" in ran:
        best = best_fixed_variant(ran)
        pairs.append(("search", "searched", "param_matched", ""))
        if best not in (None, BASELINE, "param_matched"):
            pairs.append(("search", "searched", best, BEST_FIXED))
        pairs += [("search", "searched", b, "") for b in RANDOM_BASELINES]
    rows = []
    for family, variant, against, note in pairs:
        if variant not in ran or against not in ran:
            continue
        test = paired(by_seed(ran[variant]), by_seed(ran[against]))
        if test is not None:
            rows.append(
                {"family": family, "variant": variant, "against": against, "note": note, **test}
            )
    for family in ("fixed", "search"):
        members = [row for row in rows if row["family"] == family]
        for row, adjusted in zip(members, holm([row["p"] for row in members])):
            row["holm_p"] = adjusted
            row["power"] = paired_power(TARGET_EFFECT, row["std"], row["n"], 0.05 / len(members))
    return rows


#: How the report introduces each family of paired comparisons.
FAMILY_TITLES = {
    "fixed": "Paired comparisons of the fixed architectures",
    "search": "Paired comparisons of the searched child, a family of its own",
}


def comparison_lines(rows):
    """The paired comparisons as one markdown table per family, each with its power."""
    lines = []
    for family, title in FAMILY_TITLES.items():
        members = [row for row in rows if row["family"] == family]
        if members:
            lines += _family_lines(members, title)
    return lines


def _family_lines(rows, title):
    """One family's table, and a sentence on what it could detect."""
    lines = [
        "",
        f"{title} (per-seed differences, runs of a seed share their data order): "
        f"mean difference with its 95% interval, paired t-test, Holm's correction over the "
        f"{len(rows)} comparisons of this table; power: the chance this design detects a "
        f"true {100 * TARGET_EFFECT:g}-point difference at the level Holm gives its first "
        f"test (0.05/{len(rows)}), with the spread of the differences measured here.",
        "",
        "| variant | against | seeds | Δ (points) | 95% interval | p | Holm p | power at "
        f"{100 * TARGET_EFFECT:g} points |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        power = "—" if row["power"] is None else f"{row['power']:.0%}"
        mark = " **(beyond noise)**" if row["holm_p"] < 0.05 else ""
        against = VARIANT_BY_KEY[row["against"]].label
        against += f" ({row['note']})" if row.get("note") else ""
        lines.append(
            f"| {VARIANT_BY_KEY[row['variant']].label} | {against} "
            f"| {row['n']} | {100 * row['diff']:+.2f}{mark} "
            f"| [{100 * row['low']:+.2f}, {100 * row['high']:+.2f}] | {row['p']:.3f} "
            f"| {row['holm_p']:.3f} | {power} |"
        )
    stds = [row["std"] for row in rows if row["std"]]
    if stds:
        typical, n = float(np.median(stds)), min(row["n"] for row in rows)
        detectable = paired_detectable(typical, n, 0.05 / len(rows))
        lines += [
            "",
            f"With {n} seeds and a typical std of the paired differences of "
            f"{100 * typical:.2f} points, this table detects a difference of "
            f"{100 * detectable:.2f} points with 80% power after Holm's correction; smaller "
            "ones can be there unseen ('not beyond noise' means not shown, not shown absent).",
        ]
    return lines
