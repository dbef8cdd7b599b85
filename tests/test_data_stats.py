"""The data chapter's compact table: one line per data set, read from the per-split rows."""

import pytest

from plus.data import compact_summary


def split(dataset, name, records, users, contested, median=10.0, largest=20):
    return {
        "dataset": dataset, "split": name, "records": records, "users": users, "contested_share": contested,
        "context_pairs_mean": 3.0, "context_tokens_mean": median, "context_tokens_median": median,
        "context_tokens_max": largest,
    }  # fmt: skip


def test_one_line_per_data_set_with_the_contested_share_weighted_by_held_out_records():
    rows = [
        split("pets", "train", 100, 2, 0.5, median=40.5, largest=61),
        split("pets", "test", 30, 2, 0.4),
        split("pets", "test_ood", 10, 2, 0.8),
        split("prism", "train", 8, 3, None),
        split("prism", "test", 4, 5, None),
    ]
    pets, prism = compact_summary(rows)
    assert pets["data set"] == "pets" and pets["train records"] == 100 and pets["users"] == 2
    assert pets["held-out records"] == "test 30, test_ood 10"
    assert pets["contested"] == pytest.approx((0.4 * 30 + 0.8 * 10) / 40)
    assert pets["context tokens (median, max)"] == "40.5, 61"
    assert prism["contested"] is None and prism["users"] == 5  # the most users any split has


def test_record_cards_show_the_first_record_of_each_data_sets_first_and_last_split():
    from plus.data import record_cards

    def record(dataset, split, user):
        return {"dataset": dataset, "split": split, "user_id": user, "contested": None, "ground_truth": None,
                "context": "c", "eval_prompt": "p", "eval_chosen": "a", "eval_rejected": "b"}  # fmt: skip

    records = {"pets": [record("pets", "train", "u1"), record("pets", "train", "u2"), record("pets", "test", "u3")],
               "prism": [record("prism", "train", "u4")]}  # fmt: skip
    cards = record_cards(records)
    assert len(cards) == 3  # a data set with one split gives one card
    assert "user `u1`" in cards[0] and "user `u3`" in cards[1] and "user `u4`" in cards[2]
