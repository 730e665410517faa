"""The study's statistics: Welch's test, the detectable difference, per-variant summaries."""

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
