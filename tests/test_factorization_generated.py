"""PReF's best-of-N over generated text (`plus.factorization.generated`), end to end at the smoke profile."""

import json
import math
from dataclasses import replace

import pytest
import torch

from plus.artifacts import write_table
from plus.factorization.generated import (
    JUDGE_BEST,
    PREF,
    SINGLE_BT,
    TRUE_PHI,
    api_check,
    expected_outcomes,
    generate_candidates,
    generated_bars,
    generated_config,
    generated_note,
    generated_rows,
    ordered_like_judge,
    run_generated,
    style_hints,
)


def test_the_win_rate_against_a_random_sample_counts_ties_half():
    utilities = torch.tensor([[1.0, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    # prompt 0: the best sample beats 3 of 4 and ties itself; prompt 1: every sample ties
    assert expected_outcomes(utilities, torch.tensor([3, 0])).tolist() == [0.875, 0.5]
    assert expected_outcomes(utilities, torch.tensor([1, 2])).tolist() == [0.25, 0.5]
    # a ranking that knows nothing, averaged over every pick, scores 50%
    mean = torch.stack([expected_outcomes(utilities, torch.tensor([i, i])) for i in range(4)]).mean()
    assert mean.item() == pytest.approx(0.5)


def test_transfer_counts_the_sample_pairs_ordered_as_the_judge_does():
    utilities = torch.tensor([[2.0, 1.0, 0.0]])
    assert ordered_like_judge(torch.tensor([[3.0, 2.0, 1.0]]), utilities) == (1.0, 3)
    assert ordered_like_judge(torch.tensor([[1.0, 2.0, 3.0]]), utilities) == (0.0, 3)
    assert ordered_like_judge(torch.tensor([[1.0, 1.0, 0.0]]), utilities) == (pytest.approx(5 / 6), 3)
    share, pairs = ordered_like_judge(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.0]]))
    assert math.isnan(share) and pairs == 0  # every pair ties under the judge: nothing to order


def test_style_hints_are_seeded_and_mostly_ask_for_a_pole():
    config = generated_config("cpu")
    hints = style_hints(config, 0)
    assert len(hints) == config.num_prompts and all(len(row) == config.num_candidates for row in hints)
    assert hints == style_hints(config, 0) and hints != style_hints(config, 1)
    flat = [h for row in hints for h in row]
    assert 0 < flat.count(None) < len(flat) / 5
    assert all(h.startswith("This user prefers ") for h in flat if h is not None)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="GeneratedConfig.num_candidates must be >= 2"):
        generated_config("smoke", num_candidates=1)
    with pytest.raises(ValueError, match="GeneratedConfig.temperature must be a finite number, got nan"):
        generated_config("smoke", temperature=float("nan"))
    with pytest.raises(ValueError, match="GeneratedConfig.temperature must be > 0"):
        generated_config("smoke", temperature=0.0)
    with pytest.raises(ValueError, match="num_prompts is at most 40"):
        generated_config("smoke", num_prompts=41)
    with pytest.raises(ValueError, match="answer_counts must be non-negative"):
        generated_config("smoke", answer_counts=())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    config = generated_config("smoke")
    samples = generate_candidates(config, out)
    return config, out, samples, run_generated(config, samples)


def test_the_smoke_run_scores_every_ranking_with_intervals(smoke, tmp_path):
    config, _, samples, result = smoke
    assert len(samples["samples"]["0"]) == config.num_prompts
    assert all(t.strip() for row in samples["samples"]["0"] for t in row)  # no empty sample survives
    assert set(result["cells"]) == {PREF, TRUE_PHI, SINGLE_BT, JUDGE_BEST}
    assert set(result["cells"][TRUE_PHI]) == set(result["cells"][PREF])  # the same answers, another phi
    assert set(result["cells"][PREF]) == {str(k) for k in config.answer_counts}
    users = result["num_new_users"]
    for by_k in result["cells"].values():
        for cell in by_k.values():
            assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
            assert cell["n"] == users * config.num_prompts
    # the judge's best is the ceiling of every ranking
    best = result["cells"][JUDGE_BEST]["-"]["mean"]
    assert all(c["mean"] <= best + 1e-9 for by_k in result["cells"].values() for c in by_k.values())
    rows = generated_rows(result)
    write_table(tmp_path / "table.json", rows)  # the RESULTS.md format checks pass
    metrics = {(r["method"], r["metric"]) for r in rows}
    assert {(PREF, "win_rate@2"), (SINGLE_BT, "win_rate"), ("style-judge", "accuracy/verbosity")} <= metrics
    assert next(r for r in rows if r["metric"] == "win_rate@2")["reported"] is None
    assert [b["holds"] for b in generated_bars(result)][0] is True  # the judge's validation
    note = generated_note(result)
    assert "Sanity bars:" in note and "PReF after 2 answers" in note


def test_samples_are_read_back_and_another_configs_are_set_aside(smoke):
    config, out, samples, _ = smoke
    again = generate_candidates(replace(config, skip_generation=True), out)
    assert again["samples"] == json.loads(json.dumps(samples["samples"]))
    with pytest.raises(FileNotFoundError, match="no stored samples for seeds \\[0\\]"):
        generate_candidates(replace(config, skip_generation=True, max_new_tokens=9), out)
    assert (out / "generations.json.stale").exists()  # the first run's samples, kept aside


def test_missing_samples_are_named(smoke):
    config, _, samples, _ = smoke
    with pytest.raises(ValueError, match="no samples for seed 0"):
        run_generated(config, {"samples": {}, "seconds": {}})
    short = {"samples": {"0": samples["samples"]["0"][:1]}, "seconds": {}}
    with pytest.raises(ValueError, match="seed 0: expected 2 x 3 samples"):
        run_generated(config, short)


def test_the_api_check_asks_about_pref_picks_and_compares_with_the_style_judge(smoke):
    from plus.api_judge import ApiJudge

    config, _, samples, result = smoke
    assert len(result["picks"]) == result["num_new_users"]
    asked = []

    def post(judge, payload):  # a stand-in endpoint that always prefers response A: every item ties
        asked.append(payload)
        return {"choices": [{"message": {"content": "A"}}]}

    check = api_check(config, result, samples, ApiJudge("http://unused", "m"), num_items=3, post=post)
    assert check["n"] == 3 and len(asked) == 6 and check["mean"] == 0.5
    assert 0.0 <= check["agreement"] <= 1.0
    with pytest.raises(ValueError, match="positive number of items"):
        api_check(config, result, samples, ApiJudge("http://unused", "m"), num_items=0, post=post)
