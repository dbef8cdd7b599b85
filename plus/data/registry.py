"""Builders by name, so reward-model and PReF code can ask for a data set with one call."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from plus.data.attributes import build_attribute_users, build_pref_attributes
from plus.data.pets import build_pets

DATASETS: dict[str, Callable[..., list[dict]]] = {
    "pets": partial(build_pets, ood=False),
    "pets-ood": partial(build_pets, ood=True),
    "uf-p-2-synthetic": partial(build_attribute_users, "uf-p-2"),
    "uf-p-4-synthetic": partial(build_attribute_users, "uf-p-4"),
    "attributes": build_pref_attributes,
}
"""Offline synthetic data sets: name -> builder taking ``seed`` and size keywords."""


def build_dataset(name: str, seed: int = 0, **sizes: int) -> list[dict]:
    """Records of the offline data set ``name`` (see `DATASETS`); ``sizes`` go to its builder
    (``num_train``/``num_test`` for Pets and UF-P-like sets, ``num_answers``/``num_heldout``/... for attributes)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](seed=seed, **sizes)
