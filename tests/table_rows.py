"""A ``table.json`` row (``../shared/RESULTS.md``) for tests of code that reads result tables."""


def table_row(dataset, split, subset, method, mean, half_width=0.02, metric="accuracy"):
    """A row with a symmetric interval of ``half_width`` around ``mean``, 200 items, seeds 0-2."""
    return {
        "dataset": dataset,
        "split": split,
        "subset": subset,
        "method": method,
        "metric": metric,
        "mean": mean,
        "ci_low": mean - half_width,
        "ci_high": mean + half_width,
        "n": 200,
        "seeds": [0, 1, 2],
        "reported": None,
    }
