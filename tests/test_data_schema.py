import json

import pytest

from plus.data import RecordError, build_pets, read_jsonl, to_dataset, validate_record, write_jsonl


@pytest.fixture
def records():
    return build_pets(seed=0, num_train=6, num_test=4)


def test_jsonl_round_trip_is_identity(records, tmp_path):
    path = write_jsonl(records, tmp_path / "pets.jsonl")
    assert read_jsonl(path) == records


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("eval_chosen", "", "is empty"),
        ("split", "valid", "expected one of"),
        ("context_messages", [{"role": "robot", "content": "x"}], "role 'robot'"),
        ("ground_truth", {"profile": {}, "description": "x"}, "profile"),
        ("contested", "yes", "true, false or null"),
        ("train_rejected", None, "must be a string"),
    ],
)
def test_bad_field_error_names_record_and_field(records, field, value, message):
    record = dict(records[0], **{field: value})
    with pytest.raises(RecordError, match=rf"record 7: field '{field}'.*{message}"):
        validate_record(record, where="record 7")


def test_missing_field_and_identical_pair_are_errors(records):
    record = dict(records[0])
    del record["reward_prompt"]
    with pytest.raises(RecordError, match="field 'reward_prompt': missing"):
        validate_record(record)
    with pytest.raises(RecordError, match="identical"):
        validate_record(dict(records[0], eval_rejected=records[0]["eval_chosen"]))


def test_read_jsonl_names_file_and_line_of_bad_record(records, tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) for r in records]
    lines[2] = json.dumps(dict(records[2], user_id=3))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=rf"{path}:3: field 'user_id'"):
        read_jsonl(path)
    lines[2] = '{"context": "truncated'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=rf"{path}:3: not valid JSON"):
        read_jsonl(path)
    path.write_text(json.dumps(records[0]) + "\n\n" + json.dumps(records[1]) + "\n")
    with pytest.raises(RecordError, match=rf"{path}:2: empty line"):
        read_jsonl(path)


def test_write_jsonl_rejects_bad_record_without_touching_file(records, tmp_path):
    path = write_jsonl(records, tmp_path / "pets.jsonl")
    before = path.read_text()
    bad = [*records[:3], dict(records[3], split="nope")]
    with pytest.raises(RecordError, match="record 3: field 'split'"):
        write_jsonl(bad, path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets.jsonl"]


def test_to_dataset_keeps_every_record_and_field(records):
    dataset = to_dataset(records)
    assert len(dataset) == len(records)
    for row, record in zip(dataset, records, strict=True):
        assert json.loads(row["ground_truth"]) == record["ground_truth"]
        assert {k: v for k, v in row.items() if k != "ground_truth"} == {
            k: v for k, v in record.items() if k != "ground_truth"
        }


def test_majority_credit_counts_the_votes_of_users_with_a_preference():
    from plus.data.schema import majority_credit

    assert majority_credit([(2, 1), (2, 1), (0, 1)]) == 1.0
    assert majority_credit([(2, 1), (0, 1)]) == 0.5
    assert majority_credit([(1, 1), (0, 3)]) == 0.0  # the indifferent user does not vote
    assert majority_credit([]) == 0.5
