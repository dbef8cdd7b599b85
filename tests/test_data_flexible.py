import pytest

from plus.data import (
    build_attribute_users,
    build_dataset,
    build_flexible_contexts,
    build_response_bank,
    ground_truth_reward,
    write_jsonl,
)

SIZES = dict(num_train=40, num_test=12)


@pytest.mark.parametrize("kind", ["conversations", "user_guide"])
def test_same_users_and_targets_as_labelled_pairs_only_context_differs(kind):
    labelled = build_attribute_users("uf-p-4", seed=0, **SIZES)
    flexible = build_flexible_contexts("uf-p-4", kind, seed=0, **SIZES)
    assert len(flexible) == len(labelled)
    context_keys = {"dataset", "context", "context_messages", "context_pairs", "context_kind"}
    for a, b in zip(labelled, flexible, strict=True):
        assert {k: v for k, v in a.items() if k not in context_keys} == {
            k: v for k, v in b.items() if k not in context_keys
        }
        assert b["context_kind"] == kind and b["context_pairs"] == [] and b["context"] != a["context"]


def test_conversation_replies_reveal_the_users_preference():
    bank = build_response_bank(seed=0)
    rewards = []
    for record in build_flexible_contexts("uf-p-2", "conversations", seed=0, **SIZES):
        profile = record["ground_truth"]["profile"]
        replies = [m["content"] for m in record["context_messages"] if m["role"] == "assistant"]
        assert len(replies) == 3
        rewards += [ground_truth_reward(profile, bank.scores_of(text)) for text in replies]
    # a random candidate's reward averages 0 (scores uniform on {-1, 0, 1}); the best of 4 averages 0.6
    assert sum(rewards) / len(rewards) > 0.4


def test_user_guide_names_the_users_poles_without_copying_ground_truth():
    for record in build_flexible_contexts("uf-p-2", "user_guide", seed=0, **SIZES):
        assert record["context"] != record["ground_truth"]["description"]
        assert len(record["context_messages"]) == 1


@pytest.mark.parametrize("name", ["uf-p-2-synthetic-conversations", "uf-p-4-synthetic-user-guide"])
def test_same_seed_gives_identical_files(tmp_path, name):
    a = write_jsonl(build_dataset(name, seed=0, **SIZES), tmp_path / "a.jsonl")
    b = write_jsonl(build_dataset(name, seed=0, **SIZES), tmp_path / "b.jsonl")
    assert a.read_bytes() == b.read_bytes()


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="Unknown context kind"):
        build_flexible_contexts("uf-p-2", "diary")
