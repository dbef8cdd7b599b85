"""UF-P and PRISM builders on small fixture files written in the hubs' schemas (tests/fixtures)."""

import json
import re
from pathlib import Path

import pytest

from plus.data import RecordError, build_prism, build_ultrafeedback, write_jsonl

FIXTURES = Path(__file__).parent / "fixtures"
PAIRS, RATINGS = FIXTURES / "ultrafeedback_pairs.jsonl", FIXTURES / "ultrafeedback_ratings.jsonl"
PRISM = FIXTURES / "prism_conversations.jsonl"


def _uf(population="uf-p-2", **kwargs):
    return build_ultrafeedback(population, PAIRS, RATINGS, test_fraction=0.3, **kwargs)


def _ratings():
    out = {}
    for line in RATINGS.read_text().splitlines():
        row = json.loads(line)
        for c in row["completions"]:
            out[(row["instruction"].strip(), c["response"].strip())] = {
                d: v["Rating"] for d, v in c["annotations"].items()
            }
    return out


@pytest.mark.parametrize("population", ["uf-p-2", "uf-p-4"])
def test_uf_labels_follow_ratings_and_every_pair_is_disagreed(population):
    records, ratings = _uf(population), _ratings()
    assert records and all(r["contested"] and r["ground_truth"] is None for r in records)
    by_pair = {}
    for r in records:
        a, b = ratings[(r["eval_prompt"], r["eval_chosen"])], ratings[(r["eval_prompt"], r["eval_rejected"])]
        assert a[r["user_id"]] != "N/A" and b[r["user_id"]] != "N/A"
        assert float(a[r["user_id"]]) >= float(b[r["user_id"]])  # equal only for a coin-broken tie
        by_pair.setdefault(r["pair_id"], set()).add(r["eval_chosen"])
    assert all(len(chosen) == 2 for chosen in by_pair.values())  # the users disagree on every kept pair
    users = {"uf-p-2": 2, "uf-p-4": 4}[population]
    assert all(sum(r["pair_id"] == p for r in records) == users for p in by_pair)


def test_uf_drops_na_and_unmatched_pairs_and_splits_pairs_disjointly():
    records, ratings = _uf("uf-p-4"), _ratings()
    pair_ids = {r["pair_id"] for r in records}
    assert "36" not in pair_ids  # the fixture's last pair has no rating row
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    for i, row in enumerate(pairs[:-1]):
        a = ratings[(row["prompt"], row["chosen"][-1]["content"].strip())]
        b = ratings[(row["prompt"], row["rejected"][-1]["content"].strip())]
        if any("N/A" in (a[d], b[d]) for d in a):
            assert str(i) not in pair_ids
    train = {r["pair_id"] for r in records if r["split"] == "train"}
    test = {r["pair_id"] for r in records if r["split"] == "test"}
    assert not train & test and len(test) == round(0.3 * len(pair_ids))


def test_uf_same_seed_gives_identical_files(tmp_path):
    a = write_jsonl(_uf(seed=42), tmp_path / "a.jsonl")
    b = write_jsonl(_uf(seed=42), tmp_path / "b.jsonl")
    c = write_jsonl(_uf(seed=1), tmp_path / "c.jsonl")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_uf_malformed_rating_names_row_and_field(tmp_path):
    rows = [json.loads(line) for line in RATINGS.read_text().splitlines()]
    rows[2]["completions"][1]["annotations"]["honesty"]["Rating"] = "excellent"
    bad = tmp_path / "ratings.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(RecordError, match=r"row 2 completion 1: field 'annotations.honesty.Rating'"):
        build_ultrafeedback("uf-p-2", PAIRS, bad)


def _scores():
    out = {}
    for line in PRISM.read_text().splitlines():
        row = json.loads(line)
        for m in row["conversation_history"]:
            if m["role"] == "model":
                out[m["content"]] = m["score"]
    return out


def test_prism_labels_follow_scores_and_splits_hold():
    records, scores = build_prism(PRISM, seed=0, new_user_fraction=0.2), _scores()
    assert all(scores[r["eval_chosen"]] > scores[r["eval_rejected"]] for r in records)
    assert all(scores[p["chosen"]] > scores[p["rejected"]] for r in records for p in r["context_pairs"])
    assert all(len(r["context_pairs"]) == 3 for r in records)
    assert "user0" not in {r["user_id"] for r in records}  # two conversations: not enough for a context
    train_users = {r["user_id"] for r in records if r["split"] == "train"}
    new_users = {r["user_id"] for r in records if r["split"] == "test_new_users"}
    assert new_users and not train_users & new_users
    assert {r["user_id"] for r in records if r["split"] == "test"} == train_users
    for user in train_users:
        mine = [r for r in records if r["user_id"] == user]
        test_convs = {r["pair_id"].split(":")[0] for r in mine if r["split"] == "test"}
        train_convs = {r["pair_id"].split(":")[0] for r in mine if r["split"] == "train"}
        assert len(test_convs) == 1 and train_convs and not test_convs & train_convs
        for r in mine:  # contexts come from the user's train conversations, never the target's own
            assert r["pair_id"].split(":")[0] not in r["context_conversation_ids"]
            assert set(r["context_conversation_ids"]) <= train_convs


def test_prism_same_seed_gives_identical_files_and_bad_file_is_named(tmp_path):
    a = write_jsonl(build_prism(PRISM, seed=3), tmp_path / "a.jsonl")
    b = write_jsonl(build_prism(PRISM, seed=3), tmp_path / "b.jsonl")
    assert a.read_bytes() == b.read_bytes()
    rows = [json.loads(line) for line in PRISM.read_text().splitlines()]
    rows[4]["conversation_history"][0]["role"] = "assistant"
    bad = tmp_path / "prism.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(RecordError, match=r"row 4: conversation_history\[0\]: field 'role'"):
        build_prism(bad)


def _prism_rows():
    return [json.loads(line) for line in PRISM.read_text().splitlines()]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("field", ["user_id", "conversation_id"])
@pytest.mark.parametrize("how", ["missing", "null"])
def test_prism_row_without_user_or_conversation_id_names_row_and_field(tmp_path, field, how):
    rows = _prism_rows()
    if how == "missing":
        del rows[5][field]  # the JSON loader fills the gap with None
    else:
        rows[5][field] = None
    with pytest.raises(RecordError, match=rf"row 5: field '{field}' is None"):
        build_prism(_write_jsonl(tmp_path / "prism.jsonl", rows))


def test_prism_numeric_string_scores_give_the_same_records(tmp_path):
    rows = _prism_rows()
    for row in rows:
        for message in row["conversation_history"]:
            if message["score"] is not None:
                message["score"] = str(message["score"])  # "85" > "100" as text: scores must be numbers
    strings = build_prism(_write_jsonl(tmp_path / "prism.jsonl", rows), seed=0, new_user_fraction=0.2)
    assert strings == build_prism(PRISM, seed=0, new_user_fraction=0.2)


@pytest.mark.parametrize(
    "score",
    ["excellent", "", "NaN", "101", 0, 101, -5, float("nan")],
    ids=["word", "empty", "nan-text", "101-text", "0", "101", "-5", "nan"],
)
def test_prism_score_not_a_number_in_1_to_100_names_row_and_field(tmp_path, score):
    rows = _prism_rows()
    if isinstance(score, str):  # one column type per file: make every score a string
        for row in rows:
            for message in row["conversation_history"]:
                if message["score"] is not None:
                    message["score"] = str(message["score"])
    assert rows[3]["conversation_history"][1]["role"] == "model"
    rows[3]["conversation_history"][1]["score"] = score
    with pytest.raises(RecordError, match=r"row 3: conversation_history\[1\]: field 'score' is .*from 1 to 100"):
        build_prism(_write_jsonl(tmp_path / "prism.jsonl", rows))


@pytest.mark.parametrize("message", [0, 1])  # the turn's user prompt, a model response
def test_prism_null_content_names_row_and_field(tmp_path, message):
    rows = _prism_rows()
    rows[3]["conversation_history"][message]["content"] = None
    with pytest.raises(RecordError, match=rf"row 3: conversation_history\[{message}\]: field 'content' is None"):
        build_prism(_write_jsonl(tmp_path / "prism.jsonl", rows))


def test_prism_null_conversation_history_names_row_and_field(tmp_path):
    rows = _prism_rows()
    rows[3]["conversation_history"] = None
    with pytest.raises(RecordError, match=r"row 3: field 'conversation_history' is None"):
        build_prism(_write_jsonl(tmp_path / "prism.jsonl", rows))


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _pair_key(record):
    return record["eval_prompt"], frozenset((record["eval_chosen"], record["eval_rejected"]))


def test_uf_duplicated_pair_rows_never_put_a_test_pair_in_train(tmp_path):
    rows = _rows(PAIRS)
    swapped = [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in rows]
    doubled = _write_jsonl(tmp_path / "pairs.jsonl", rows + rows + swapped)  # each pair three times
    records = build_ultrafeedback("uf-p-2", doubled, RATINGS, test_fraction=0.3)
    train = {_pair_key(r) for r in records if r["split"] == "train"}
    test = {_pair_key(r) for r in records if r["split"] == "test"}
    assert test and not train & test
    assert records == _uf()  # the copies are dropped, the first of each pair is kept as it was


@pytest.mark.parametrize(
    "source, change, match",
    [
        ("ratings", lambda rows: rows[2].update(instruction=None), r"row 2: field 'instruction' is None"),
        ("ratings", lambda rows: rows[2].update(completions=None), r"row 2: field 'completions' is None"),
        ("ratings", lambda rows: rows[2]["completions"][1].pop("response"), r"row 2 completion 1: field 'response'"),
        (
            "ratings",
            lambda rows: rows[2]["completions"][1].update(response=None),
            r"row 2 completion 1: field 'response' is None",
        ),
        ("pairs", lambda rows: rows[2].update(prompt=None), r"row 2: field 'prompt' is None"),
        (
            "pairs",
            lambda rows: rows[2]["chosen"][-1].update(content=None),
            r"row 2: field 'chosen\[-1\].content' is None",
        ),
    ],
    ids=["null-instruction", "null-completions", "missing-response", "null-response", "null-prompt", "null-content"],
)
def test_uf_null_or_missing_field_names_row_and_field(tmp_path, source, change, match):
    rows = _rows(RATINGS if source == "ratings" else PAIRS)
    change(rows)
    bad = _write_jsonl(tmp_path / f"{source}.jsonl", rows)
    pairs, ratings = (PAIRS, bad) if source == "ratings" else (bad, RATINGS)
    with pytest.raises(RecordError, match=match):
        build_ultrafeedback("uf-p-2", pairs, ratings)


@pytest.mark.parametrize("rating", ["99", "0", "6", "NaN", "inf", "-1"])
def test_uf_rating_outside_1_to_5_names_row_and_field(tmp_path, rating):
    rows = _rows(RATINGS)
    rows[2]["completions"][1]["annotations"]["helpfulness"]["Rating"] = rating
    bad = _write_jsonl(tmp_path / "ratings.jsonl", rows)
    with pytest.raises(RecordError, match=r"row 2 completion 1: field 'annotations.helpfulness.Rating': .* 1 to 5"):
        build_ultrafeedback("uf-p-2", PAIRS, bad)


@pytest.mark.parametrize("content", ["", "\n\n"], ids=["empty", "blank-lines"])
@pytest.mark.parametrize("which", ["pairs", "ratings", "prism"])
def test_empty_data_file_is_named(tmp_path, which, content):
    empty = tmp_path / f"{which}.jsonl"
    empty.write_text(content)
    with pytest.raises(RecordError, match=re.escape(f"{empty}: the file is empty")):
        if which == "prism":
            build_prism(empty)
        else:
            build_ultrafeedback("uf-p-2", *((empty, RATINGS) if which == "pairs" else (PAIRS, empty)))


def test_prism_if_chosen_as_strings_gives_the_same_records_and_junk_names_the_field(tmp_path):
    rows = _prism_rows()
    for row in rows:
        for message in row["conversation_history"]:
            if "if_chosen" in message and message["if_chosen"] is not None:
                message["if_chosen"] = "true" if message["if_chosen"] else "false"  # "false" is truthy as text
    strings = build_prism(_write_jsonl(tmp_path / "prism.jsonl", rows), seed=0, new_user_fraction=0.2)
    assert strings == build_prism(PRISM, seed=0, new_user_fraction=0.2)
    model = next(m for m in rows[3]["conversation_history"] if m["role"] == "model")
    model["if_chosen"] = "maybe"
    with pytest.raises(RecordError, match=r"row 3.*field 'if_chosen' is 'maybe'"):
        build_prism(_write_jsonl(tmp_path / "junk.jsonl", rows), seed=0, new_user_fraction=0.2)


def test_a_csv_of_a_header_only_is_named(tmp_path):
    from plus.data.ultrafeedback import load_table

    header = tmp_path / "ratings.csv"
    header.write_text("instruction,completions\n")
    with pytest.raises(RecordError, match=re.escape(f"{header}: no rows could be read")):
        load_table(header)


def test_a_response_rated_twice_with_other_ratings_names_both_rows(tmp_path):
    rows = _rows(RATINGS)
    copy = json.loads(json.dumps(rows[2]))
    copy["completions"][1]["annotations"]["helpfulness"]["Rating"] = "1" if rows[2]["completions"][1][
        "annotations"]["helpfulness"]["Rating"] != "1" else "5"  # fmt: skip
    same = _write_jsonl(tmp_path / "same.jsonl", [*rows, json.loads(json.dumps(rows[2]))])
    assert build_ultrafeedback("uf-p-2", PAIRS, same) == build_ultrafeedback("uf-p-2", PAIRS, RATINGS)
    conflicting = _write_jsonl(tmp_path / "conflicting.jsonl", [*rows, copy])
    with pytest.raises(RecordError, match=rf"row {len(rows)} completion 1: .* already rated at row 2 completion 1"):
        build_ultrafeedback("uf-p-2", PAIRS, conflicting)


def test_prism_with_no_user_of_enough_conversations_is_an_error_not_an_empty_data_set():
    assert build_prism(PRISM)  # the fixture's users have enough conversations for the default context
    with pytest.raises(RecordError, match=re.escape(f"{PRISM}: no user has the 52 rated conversations")):
        build_prism(PRISM, num_context_conversations=50)
