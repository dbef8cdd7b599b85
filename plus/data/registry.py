"""Builders by name, so reward-model and PReF code can ask for a data set with one call."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from plus.data.attributes import build_attribute_users, build_pref_archetypes, build_pref_attributes
from plus.data.flexible import build_flexible_contexts
from plus.data.pets import build_pets

DATASETS: dict[str, Callable[..., list[dict]]] = {
    "pets": partial(build_pets, ood=False),
    "pets-ood": partial(build_pets, ood=True),
    "uf-p-2-synthetic": partial(build_attribute_users, "uf-p-2"),
    "uf-p-4-synthetic": partial(build_attribute_users, "uf-p-4"),
    "attributes": build_pref_attributes,
    "archetypes": build_pref_archetypes,
    "uf-p-2-synthetic-conversations": partial(build_flexible_contexts, "uf-p-2", "conversations"),
    "uf-p-2-synthetic-user-guide": partial(build_flexible_contexts, "uf-p-2", "user_guide"),
    "uf-p-4-synthetic-conversations": partial(build_flexible_contexts, "uf-p-4", "conversations"),
    "uf-p-4-synthetic-user-guide": partial(build_flexible_contexts, "uf-p-4", "user_guide"),
}
"""Offline synthetic data sets: name -> builder taking ``seed`` and size keywords."""

PREF_POPULATIONS: tuple[str, ...] = ("attributes", "archetypes")
"""The populations of PReF's shared-pool form (`plus.data.attributes.build_pref_attributes`): users answering a
shared pool of pairs, with a pair x user label matrix."""


def build_dataset(name: str, seed: int = 0, **sizes: int) -> list[dict]:
    """Records of the offline data set ``name`` (see `DATASETS`); ``sizes`` go to its builder
    (``num_train``/``num_test`` for Pets and UF-P-like sets, ``num_answers``/``num_heldout``/... for attributes)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](seed=seed, **sizes)


def profile_sizes(name: str, num_train_examples: int, num_test_examples: int) -> dict[str, int]:
    """Builder sizes for data set ``name`` at a profile's scale (``Profile.num_train_examples`` and
    ``num_test_examples``). Attributes keeps PReF's 40 answers per user unless the profile is tiny (< 100
    train examples, the smoke profile), where it uses 6 answers, 2 held out, 10 new users and 80 pairs."""
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    if name in PREF_POPULATIONS:
        if num_train_examples < 100:
            return {"num_answers": 6, "num_heldout": 2, "num_new_users": 10, "num_pairs": 80}
        return {}
    return {"num_train": num_train_examples, "num_test": num_test_examples}
