"""The study's statistics: paired and Welch tests, Holm's correction, power, summaries.

Runs with the same seed share their data order (and, for equal architectures,
their initial weights), so two variants are compared **paired by seed**:
:func:`paired` tests the mean of the per-seed differences. Each family of
comparisons of a report is corrected with :func:`holm`, and
:func:`paired_power` / :func:`paired_detectable` say what the study could
have seen.
"""

import math

import numpy as np

from keras_metapool.study.plan import PER_SEED_VARIANTS


def welch(a, b):
    """Welch's t-test of mean(a) - mean(b): dict(diff, t, df, p), None below 2 each."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats  # installed with tensorflow-model-optimization

    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return {"diff": diff, "t": math.inf if diff else 0.0, "df": None, "p": float(diff == 0)}
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return {"diff": diff, "t": t, "df": df, "p": float(2 * stats.t.sf(abs(t), df))}


def paired(a, b, confidence=0.95):
    """Paired t-test of ``a - b`` over the keys (seeds) both dicts hold.

    Args:
        a, b: ``{seed: value}``.
        confidence: Level of the interval of the mean difference.

    Returns:
        dict(diff (mean of the differences), std (of the differences), n,
        t, df, p (two-sided), low, high (the interval), seeds), or None with
        fewer than 2 common seeds. Differences that are all the same (as
        accuracies, multiples of 1/N, often are over few seeds) have no spread
        for a t-test: their p is the exact sign-flip test's, ``2 / 2**n`` (1
        if they are all 0), with an infinite t and a zero-width interval.
    """
    from scipy import stats  # installed with tensorflow-model-optimization

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = np.array([a[seed] - b[seed] for seed in seeds], float)
    n, diff, std = len(d), float(d.mean()), float(d.std(ddof=1))
    result = {"diff": diff, "std": std, "n": n, "df": n - 1, "seeds": seeds}
    if std <= 1e-9 * max(1.0, abs(diff)):  # no spread, up to rounding
        p = 1.0 if abs(diff) <= 1e-12 else min(1.0, 2.0 / 2**n)
        return {**result, "std": 0.0, "t": math.copysign(math.inf, diff) if p < 1 else 0.0,
                "p": p, "low": diff, "high": diff}  # fmt: skip
    t = diff / (std / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    p = float(2 * stats.t.sf(abs(t), n - 1))
    return {**result, "t": t, "p": p, "low": diff - half, "high": diff + half}


def holm(p_values):
    """Holm's step-down adjusted p-values, in the order given (None stays None).

    The smallest of m p-values is multiplied by m, the next by m - 1, and so
    on, each kept at least as large as the one before and at most 1; a
    hypothesis is rejected at family-wise level alpha when its adjusted
    p-value is below alpha.
    """
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m, running = len(indexed), 0.0
    adjusted = [None] * len(p_values)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_power(effect, std, n, alpha=0.05):
    """Power of a two-sided paired t-test at level ``alpha`` for a true mean difference
    ``effect``, differences of standard deviation ``std``, ``n`` pairs (noncentral t);
    None below 2 pairs, without spread, or where scipy cannot compute it."""
    from scipy import stats

    if n < 2 or not std:
        return None
    critical = stats.t.ppf(1 - alpha / 2, n - 1)
    shift = abs(effect) / (std / math.sqrt(n))
    near, far = stats.nct.sf(critical, n - 1, shift), stats.nct.cdf(-critical, n - 1, shift)
    if math.isnan(near):
        near = 1.0 - stats.nct.cdf(critical, n - 1, shift)
    # NOTE: scipy's noncentral t gives NaN for a far tail beyond its precision: that is 0.
    power = near + (0.0 if math.isnan(far) else far)
    return None if math.isnan(power) else float(min(1.0, power))


def paired_detectable(std, n, alpha=0.05, power=0.8):
    """Smallest mean difference a paired t-test detects with ``power`` (None below 2 pairs)."""
    if n < 2 or std is None:
        return None
    if std == 0:
        return 0.0
    low, high = 0.0, 1.0
    while paired_power(high * std, std, n, alpha) < power:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if paired_power(middle * std, std, n, alpha) < power else (
            low, middle)  # fmt: skip
    return high * std


def at_chance(accuracy, classes, examples, z=3.0):
    """Whether ``accuracy`` on ``examples`` test images is within ``z`` binomial standard
    errors of guessing among ``classes`` (a model that learned nothing)."""
    chance = 1.0 / classes
    return accuracy <= chance + z * math.sqrt(chance * (1 - chance) / max(1, examples))


def on_every_seed(by_variant):
    """The entries of ``{variant: {seed: value}}`` run on every seed any of them has,
    so that their means are over the same seeds."""
    seeds = set().union(*by_variant.values())
    return {variant: values for variant, values in by_variant.items() if set(values) == seeds}


def by_seed(runs, key="test_accuracy"):
    """``{seed: run[key]}`` of a variant's runs."""
    return {int(run["seed"]): run[key] for run in runs}


def pooled_std(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) + len(b) <= 2:
        return None
    return math.sqrt(
        (
            (len(a) - 1) * a.var(ddof=1 if len(a) > 1 else 0)
            + (len(b) - 1) * b.var(ddof=1 if len(b) > 1 else 0)
        )
        / (len(a) + len(b) - 2)
    )


def detectable_difference(std, n):
    """Smallest difference of means a two-sided t-test (p < 0.05) detects with n seeds each."""
    from scipy import stats

    if std is None or n < 2:
        return None
    return float(stats.t.ppf(0.975, 2 * n - 2) * std * math.sqrt(2.0 / n))


def variant_stats(runs):
    accuracies = [r["test_accuracy"] for r in runs]
    return {
        "accuracies": accuracies,
        "by_seed": by_seed(runs),
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
        "n": len(accuracies),
        "params": float(np.mean([r["params"] for r in runs])),
        "macs": float(np.mean([r["macs"] for r in runs])),
        "model_alpha": float(np.mean([r["model_alpha"] for r in runs])),
        "time": float(np.mean([r["time_to_model_seconds"] for r in runs])),
        "search_time": float(np.mean([r["search_seconds"] for r in runs])),
        # CPU seconds of the process (all threads): the work, whatever else ran
        # on the machine; wall times carry the machine's other load.
        "cpu": _mean_or_none([r.get("cpu_seconds", 0) + r.get("search_cpu_seconds", 0)
                              for r in runs if "cpu_seconds" in r]),
        "search_cpu": _mean_or_none([r["search_cpu_seconds"] for r in runs
                                     if "search_cpu_seconds" in r]),
    }  # fmt: skip


def _mean_or_none(values):
    return float(np.mean(values)) if values else None


def _variant_models(latency, variant):
    """The latency file's entries for ``variant`` (per-seed variants: each architecture)."""
    models = latency["models"]
    by_seed = latency.get("architectures_by_seed") or {
        "searched": latency.get("searched_by_seed", {})  # files written before the others
    }
    if variant in PER_SEED_VARIANTS:
        return [models[k] for k in by_seed.get(variant, {}).values()]
    return [models[variant]] if variant in models else []


def int8_problems(latency, variant):
    """Why ``variant``'s int8 files are not fully integer (empty: they are, or unknown)."""
    if latency is None:
        return []
    entries = _variant_models(latency, variant)
    return [problem for entry in entries for problem in entry.get("int8_problems", [])]


def latency_ratio(latency, variant, mode):
    """Mean latency ratio of ``variant`` (per-seed variants: over their architectures)."""
    if latency is None:
        return None
    ratios = [entry[f"{mode}_ratio"] for entry in _variant_models(latency, variant)]
    return float(np.mean(ratios)) if ratios else None
