import numpy as np
import pytest

from plus.data import (
    ATTRIBUTES,
    archetype_users,
    build_attribute_users,
    build_dataset,
    build_pref_archetypes,
    build_pref_attributes,
    build_response_bank,
    ground_truth_reward,
    label_matrix,
    pref_users,
    validate_records,
    write_jsonl,
)

SMALL_UF = dict(num_train=60, num_test=20)
SMALL_PREF = dict(num_answers=8, num_heldout=3, num_new_users=10, num_pairs=120)


@pytest.fixture(scope="module")
def bank():
    return build_response_bank(seed=0)


@pytest.fixture(scope="module")
def uf4():
    return build_attribute_users("uf-p-4", seed=0, **SMALL_UF)


@pytest.fixture(scope="module")
def pref():
    return build_pref_attributes(seed=0, **SMALL_PREF)


@pytest.fixture(scope="module")
def archetypes():
    return build_pref_archetypes(seed=0, **SMALL_PREF)


def _pairs(record):
    yield record["chosen"], record["rejected"]
    yield record["eval_chosen"], record["eval_rejected"]
    for pair in record["context_pairs"]:
        yield pair["chosen"], pair["rejected"]


def test_bank_is_deterministic_and_texts_are_unique(bank):
    again = build_response_bank(seed=0)
    assert again == bank
    for candidates in bank.responses.values():
        assert len({r.text for r in candidates}) == len(candidates) == 24
        assert all(set(r.scores) == set(ATTRIBUTES) for r in candidates)


def test_surface_markers_follow_scores(bank):
    for candidates in bank.responses.values():
        for r in candidates:
            assert ("?" in r.text.split(". ")[-1] or "?" in r.text) >= (r.scores["engagement"] == 1)
            informal = any(c in r.text for c in ("Okay, so basically:", "Alright, here's the deal:"))
            assert informal == (r.scores["formality"] == -1)
            assert ("Regarding your question:" in r.text or "In response to your enquiry:" in r.text) == (
                r.scores["formality"] == 1
            )


@pytest.mark.parametrize("name", ["uf-p-2-synthetic", "uf-p-4-synthetic", "attributes", "archetypes"])
def test_same_seed_gives_identical_files(tmp_path, name):
    sizes = SMALL_PREF if name in ("attributes", "archetypes") else SMALL_UF
    a = write_jsonl(build_dataset(name, seed=1, **sizes), tmp_path / "a.jsonl")
    b = write_jsonl(build_dataset(name, seed=1, **sizes), tmp_path / "b.jsonl")
    c = write_jsonl(build_dataset(name, seed=2, **sizes), tmp_path / "c.jsonl")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("which", ["uf4", "pref", "archetypes"])
def test_every_label_agrees_with_ground_truth(request, bank, which):
    records = request.getfixturevalue(which)
    validate_records(records)
    for record in records:
        profile = record["ground_truth"]["profile"]
        for chosen, rejected in _pairs(record):
            assert ground_truth_reward(profile, bank.scores_of(chosen)) > ground_truth_reward(
                profile, bank.scores_of(rejected)
            )


def test_uf_p_like_pairs_are_contested_and_splits_disjoint(uf4, bank):
    assert all(r["contested"] for r in uf4)  # UF-P keeps only pairs the users disagree on
    seen = {r["user_id"] for r in uf4 if r["split"] == "train"}
    assert seen == {"verbose", "formal", "polite", "confident"}
    assert not seen & {r["user_id"] for r in uf4 if r["split"] == "test_new_users"}
    by_text = {r.text: pid for pid, cands in bank.responses.items() for r in cands}

    def prompts_of(split):
        return {by_text[s] for r in uf4 if r["split"] == split for pair in _pairs(r) for s in pair}

    assert prompts_of("test_new_prompts") and not prompts_of("train") & prompts_of("test_new_prompts")
    train_pairs = {r["pair_id"] for r in uf4 if r["split"] == "train"}
    assert not train_pairs & {r["pair_id"] for r in uf4 if r["split"] == "test"}
    for r in uf4:
        assert 2 <= len(r["context_pairs"]) <= 4
        # a response may recur in the context, but never the eval pair itself
        context = [{p["chosen"], p["rejected"]} for p in r["context_pairs"]]
        assert {r["eval_chosen"], r["eval_rejected"]} not in context


def test_uf_p_like_contested_share_matches_target():
    records = build_attribute_users("uf-p-2", seed=0, num_train=1000, num_test=1, contested_share=0.5)
    share = np.mean([r["contested"] for r in records if r["split"] == "train"])
    assert abs(share - 0.5) < 0.05
    profiles = [r["ground_truth"]["profile"] for r in records if r["split"] == "train"]
    # agreed pairs really are agreed: both seen users order them the same way
    bank = build_response_bank(seed=0)
    users = {tuple(sorted(p.items())) for p in profiles}
    for r in records:
        if r["split"] == "train" and not r["contested"]:
            a, b = bank.scores_of(r["eval_chosen"]), bank.scores_of(r["eval_rejected"])
            assert all(ground_truth_reward(dict(u), a) > ground_truth_reward(dict(u), b) for u in users)


def test_pref_population_is_84_two_pole_users_with_disjoint_new_users(pref):
    users = pref_users()
    assert len(users) == len(set(users)) == 84
    assert all(sum(w != 0 for w in r["ground_truth"]["profile"].values()) == 2 for r in pref)
    train_users = {r["user_id"] for r in pref if r["split"] == "train"}
    new_users = {r["user_id"] for r in pref if r["split"] == "test_new_users"}
    assert len(train_users) == 74 and len(new_users) == 10 and not train_users & new_users
    assert len(train_users | new_users) == 84


def test_pref_label_matrix_is_shared_and_consistent(pref, bank):
    train = [r for r in pref if r["split"] == "train"]
    pair_ids, user_ids, matrix = label_matrix(train)
    assert matrix.shape == (len(pair_ids), 74)
    answered = ~np.isnan(matrix)
    assert (answered.sum(0) == 8).all()  # every seen user gave num_answers answers
    assert answered.sum(1).mean() > 3  # the same pairs are answered by many users
    # heldout pairs of a user are not among their answers
    for user in user_ids[:10]:
        mine = {r["pair_id"] for r in pref if r["user_id"] == user and r["role"] == "answer"}
        held = {r["pair_id"] for r in pref if r["user_id"] == user and r["role"] == "heldout"}
        assert held and not mine & held
    prompts = {r["prompt_id"] for r in pref if r["split"] == "train"}
    assert not prompts & {r["prompt_id"] for r in pref if r["split"] == "test_new_prompts"}


def test_bad_population_and_sizes_are_errors():
    with pytest.raises(ValueError, match="Unknown population"):
        build_attribute_users("uf-p-3")
    with pytest.raises(ValueError, match="Unknown data set"):
        build_dataset("pets-xl")
    with pytest.raises(ValueError, match="num_pairs"):
        build_pref_attributes(num_answers=40, num_heldout=10, num_pairs=20)


def test_the_pref_population_is_mirror_symmetric_so_one_bt_model_has_nothing_to_rank():
    from plus.data.attributes import pole_profile, pref_users

    profiles = [pole_profile(*user) for user in pref_users()]
    totals = {}
    for profile in profiles:
        for attribute, weight in profile.items():
            totals[attribute] = totals.get(attribute, 0.0) + weight
    assert len(profiles) == 84 and all(abs(total) < 1e-12 for total in totals.values())


def test_archetype_users_have_rank_three_rewards_and_a_majority_a_single_model_can_learn(archetypes):
    users = archetype_users(num_users=84, seed=0)
    profiles = np.array([[truth["profile"][a] for a in ATTRIBUTES] for _, truth in users])  # (84, 7)
    assert len({user_id for user_id, _ in users}) == 84
    assert np.linalg.matrix_rank(profiles) == 3  # the span of the three archetypes
    assert np.linalg.norm(profiles.mean(0)) > 0.2  # unlike the mirror-symmetric two-pole users
    for _, truth in users:
        assert abs(sum(truth["archetypes"].values()) - 1) < 1e-9 and len(truth["poles"]) == 2
        assert truth["description"].startswith("This user is ")
    assert {r["dataset"] for r in archetypes} == {"archetypes"}
    new_users = {r["user_id"] for r in archetypes if r["split"] == "test_new_users"}
    assert len(new_users) == 10 and not new_users & {r["user_id"] for r in archetypes if r["split"] == "train"}


def test_archetype_weights_that_are_not_a_mixture_are_errors():
    from plus.data.attributes import archetype_ground_truth

    for weights in ({"professional": 0.5}, {"professional": 1.5, "minimalist": -0.5}, {"nerd": 1.0}):
        with pytest.raises(ValueError, match="Archetype weights must be non-negative"):
            archetype_ground_truth(weights)
    with pytest.raises(ValueError, match="num_users >= 2"):
        archetype_users(num_users=1)
