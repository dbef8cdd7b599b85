import pytest

from plus.data import ANIMALS, animal_of, build_pets, pet_sentences, write_jsonl
from plus.data.pets import (
    FACTS,
    NUM_TRAIN_FACTS,
    animal_named_first,
    animal_summary,
    contested_animals,
    ideal_summary,
)


def test_pools_are_large_and_train_test_disjoint_in_sentences_and_facts():
    for animal in ANIMALS:
        train, test = pet_sentences(animal, "train"), pet_sentences(animal, "test")
        assert len(set(train)) >= 80 and len(set(test)) >= 20
        assert not set(train) & set(test)
        test_facts = FACTS[animal][NUM_TRAIN_FACTS:]
        assert not any(fact in sentence for fact in test_facts for sentence in train)


@pytest.mark.parametrize("ood", [False, True])
def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, ood):
    a = write_jsonl(build_pets(seed=3, num_train=40, num_test=20, ood=ood), tmp_path / "a.jsonl")
    b = write_jsonl(build_pets(seed=3, num_train=40, num_test=20, ood=ood), tmp_path / "b.jsonl")
    c = write_jsonl(build_pets(seed=4, num_train=40, num_test=20, ood=ood), tmp_path / "c.jsonl")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def _pairs(record):
    yield record["chosen"], record["rejected"]
    yield record["eval_chosen"], record["eval_rejected"]
    for pair in record["context_pairs"]:
        yield pair["chosen"], pair["rejected"]


def test_every_label_agrees_with_ground_truth_and_contested_flag():
    for record in build_pets(seed=1, num_train=200, num_test=100, ood=True):
        profile = record["ground_truth"]["profile"]
        for chosen, rejected in _pairs(record):
            assert profile[animal_of(chosen)] > profile[animal_of(rejected)]
        eval_animals = {animal_of(record["eval_chosen"]), animal_of(record["eval_rejected"])}
        contested_kind = {"rabbit", "bird"} if record["split"] == "test_ood" else {"dog", "cat"}
        assert record["contested"] == (eval_animals == contested_kind)


def test_users_disagree_exactly_on_contested_pairs():
    records = build_pets(seed=0, num_train=8, num_test=8, ood=True)
    for split, kind in [("train", {"dog", "cat"}), ("test_ood", {"rabbit", "bird"})]:
        profiles = [r["ground_truth"]["profile"] for r in records if r["split"] == split]
        first, second = {tuple(sorted(p.items())) for p in profiles}
        disagree = {
            frozenset((a, b))
            for a in ANIMALS
            for b in ANIMALS
            if a != b and (dict(first)[a] > dict(first)[b]) != (dict(second)[a] > dict(second)[b])
        }
        assert disagree == {frozenset(kind)}


def test_contested_share_matches_target_and_every_context_identifies_the_user():
    records = build_pets(seed=0, num_train=2000, num_test=10)
    train = [r for r in records if r["split"] == "train"]
    share = sum(r["contested"] for r in train) / len(train)
    assert abs(share - 0.5) < 0.04  # 2000 Bernoulli(0.5): std 0.011
    for r in train:
        kinds = [{animal_of(p["chosen"]), animal_of(p["rejected"])} for p in r["context_pairs"]]
        assert len(kinds) == 3 and {"dog", "cat"} in kinds
    only_agreed = build_pets(seed=0, num_train=50, num_test=0, contested_share=0.0, min_contested_context=0)
    assert not any(r["contested"] for r in only_agreed)


def test_test_splits_use_only_test_sentences_and_users_balance():
    records = build_pets(seed=2, num_train=30, num_test=30, ood=True)
    train_pool = {s for a in ANIMALS for s in pet_sentences(a, "train")}
    test_pool = {s for a in ANIMALS for s in pet_sentences(a, "test")}
    for record in records:
        pool = train_pool if record["split"] == "train" else test_pool
        assert all(s in pool for pair in _pairs(record) for s in pair)
    assert {r["split"] for r in records} == {"train", "test", "test_ood"}
    assert sum(r["user_id"] == "helpful" for r in records if r["split"] == "train") == 15
    assert {r["user_id"] for r in records if r["split"] == "test_ood"} == {"helpful-ood", "harmless-ood"}


def test_context_never_repeats_a_target_sentence():
    for record in build_pets(seed=5, num_train=200, num_test=0):
        targets = {record["chosen"], record["rejected"], record["eval_chosen"], record["eval_rejected"]}
        assert not targets & {s for p in record["context_pairs"] for s in (p["chosen"], p["rejected"])}


def test_contested_animals_are_the_pair_the_two_users_disagree_on():
    records = build_pets(seed=0, num_train=40, num_test=40, ood=True)
    contested = [r for r in records if r["contested"]]
    assert contested
    for record in contested:
        own, other = contested_animals(record["ground_truth"]["profile"])
        assert (animal_of(record["eval_chosen"]), animal_of(record["eval_rejected"])) == (own, other)
    users = {r["user_id"]: contested_animals(r["ground_truth"]["profile"]) for r in records}
    assert users == {
        "helpful": ("dog", "cat"),
        "harmless": ("cat", "dog"),
        "helpful-ood": ("rabbit", "bird"),
        "harmless-ood": ("bird", "rabbit"),
    }


def test_animal_named_first_reads_the_first_of_the_two_animals():
    helpful = {"bird": 3, "dog": 2, "cat": 1, "rabbit": 0}
    assert animal_named_first("Prefers dogs to cats.", helpful) == "own"
    assert animal_named_first("Likes Cats more than dogs", helpful) == "other"
    assert animal_named_first("Likes birds.", helpful) == "neither"
    assert ideal_summary(helpful) == "This user prefers responses about dogs."
    assert ideal_summary(helpful, "Likes") == animal_summary("dog", "Likes") == "Likes dogs."
    with pytest.raises(ValueError, match="'hamster'"):
        animal_summary("hamster")
