import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from plus.coadapt import CoadaptConfig, coadapt_config
from plus.coadapt.evaluation import summary_accuracy
from plus.coadapt.experiment import (
    GAP,
    LOOP_VARIANTS,
    Ablation,
    ablation_settings,
    config_changes,
    gap_trend,
    heldout_probe,
    t_quantile,
    variant_config,
)
from plus.data.registry import build_dataset
from plus.evaluation import accuracy_from_credits, paper_label
from plus.reward_model import RewardModelConfig, SummaryRewardModel


@pytest.fixture(scope="module")
def pets():
    return build_dataset("pets-ood", seed=0, num_train=8, num_test=4)


def _config() -> CoadaptConfig:
    return replace(coadapt_config("smoke"), max_summary_tokens=3)


def test_variants_switch_which_model_trains():
    config = _config()
    switches = {v: (variant_config(config, v).train_summarizer, variant_config(config, v).train_reward_model)
                for v in LOOP_VARIANTS}  # fmt: skip
    assert switches == {"plus": (True, True), "plus-static-rm": (True, False), "plus-untrained": (False, True)}
    with pytest.raises(ValueError, match="not a loop variant"):
        variant_config(config, "btl")


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"variants": ("plus", "dpo")}, "Unknown ablation variants \\['dpo'\\]"), ({"steps": 0}, "steps"),
     ({"num_test": 1.5}, "num_test"), ({"seeds": ()}, "one seed")],
)  # fmt: skip
def test_bad_ablation_settings_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        ablation_settings("smoke", **changes)
    with pytest.raises(ValueError, match="Unknown profile"):
        ablation_settings("laptop")


def test_accuracy_from_credits_splits_contested_and_agreed():
    records = [{"contested": True}, {"contested": True}, {"contested": False}, {}]
    metrics = accuracy_from_credits([1.0, 0.5, 0.0, 1.0], records)
    assert metrics["accuracy"] == 0.625 and metrics["contested_accuracy"] == 0.75
    assert metrics["agreed_accuracy"] == 0.0 and metrics["num_contested"] == 2
    assert metrics["contested_outcomes"] == [1.0, 0.5]
    with pytest.raises(ValueError, match="3 credits for 4 records"):
        accuracy_from_credits([1.0, 0.5, 0.0], records)


def test_paper_label_names_plus_and_the_baselines():
    assert paper_label("plus") == "PLUS" and paper_label("plus-untrained") == "PLUS-untrained"
    assert paper_label("plus-static-rm") is None


def test_summary_accuracy_is_seeded_per_split_and_leaves_the_rng_alone(pets, tiny_chat_lm):
    model, tokenizer = tiny_chat_lm
    test = [r for r in pets if r["split"] != "train"]
    reward_model = SummaryRewardModel(RewardModelConfig(backbone="tiny-encoder", max_length=64)).train()
    state = torch.random.get_rng_state()
    splits, summaries = summary_accuracy(model, tokenizer, reward_model, test, _config(), seed=3, batch_size=4)
    assert torch.equal(torch.random.get_rng_state(), state) and reward_model.training
    assert sorted(splits) == ["test", "test_ood"] and len(summaries) == len(test)
    assert summary_accuracy(model, tokenizer, reward_model, test, _config(), seed=3, batch_size=4)[1] == summaries
    assert all(m["num_pairs"] == 4 for m in splits.values())
    probe = heldout_probe(test, _config(), seed=3, batch_size=4)(model, tokenizer, reward_model)
    pooled = sum(m["accuracy"] * m["num_pairs"] for m in splits.values()) / len(test)
    assert probe["heldout/accuracy"] == pytest.approx(pooled)


def test_a_finished_run_is_read_back_and_a_changed_one_runs_again(tmp_path):
    settings = ablation_settings("smoke", variants=("btl", "plus-untrained"))
    experiment = Ablation(settings, tmp_path)
    for variant in settings.variants:
        experiment.run("pets-ood", variant, 0)
    path = experiment.run_dir("pets-ood", "plus-untrained", 0) / "eval.json"
    written = json.loads(path.read_text())
    assert sorted(written["splits"]) == ["test", "test_ood"] and len(written["summaries"]) == 8
    assert experiment.evaluation("pets-ood", "plus-untrained", 0) == written
    rows = experiment.write_table()
    assert {(r["method"], r["split"]) for r in rows} >= {("btl", "test"), ("plus-untrained", "test_ood")}
    assert all(r["seeds"] == [0] for r in rows)
    curves = experiment.curves()
    assert set(curves["variant"]) == {"plus-untrained"} and list(curves["step"]) == [0, 1, 2]
    assert set(experiment.timing()["variant"]) == {"btl", "plus-untrained"}
    longer = Ablation(replace(settings, steps=3), tmp_path)  # another budget: the old evaluation does not count
    assert longer.evaluation("pets-ood", "plus-untrained", 0) is None
    assert longer.evaluation("pets-ood", "btl", 0) is None


def test_t_quantile_matches_the_tables():
    table = {1: 12.706, 2: 4.303, 5: 2.571, 30: 2.042}  # Student's t, two-sided 95%
    for df, value in table.items():
        assert math.isclose(t_quantile(0.975, df), value, abs_tol=2e-3)
    with pytest.raises(ValueError, match="0.5 < q < 1"):
        t_quantile(0.4, 3)


def _curves(gaps: dict[int, float]) -> pd.DataFrame:
    rows = []
    for step, gap in gaps.items():
        for seed, noise in ((0, 0.01), (1, -0.01)):  # the seeds' mean is the gap itself
            rows.append(
                {
                    "dataset": "pets-ood",
                    "variant": "plus",
                    "seed": seed,
                    "step": step,
                    "heldout/contested_accuracy": 0.5 + gap + noise,
                }
            )
            rows.append(
                {
                    "dataset": "pets-ood",
                    "variant": "plus-untrained",
                    "seed": seed,
                    "step": step,
                    "heldout/contested_accuracy": 0.5,
                }
            )
    return pd.DataFrame(rows)


def test_gap_trend_extrapolates_only_a_rising_gap():
    rising = gap_trend(_curves({0: 0.0, 10: 0.011, 20: 0.019, 30: 0.031}), "pets-ood")
    assert rising["points"] == 4 and rising["last_step"] == 30 and math.isclose(rising["gap_last"], 0.031)
    assert rising["slope_ci"][0] > 0 and math.isclose(rising["slope"], 0.001, rel_tol=0.05)
    fitted_last = rising["gap_last"] - 0.0006  # the least-squares line at step 30
    assert abs(rising["batches_to_gap"] - (GAP - fitted_last) / rising["slope"]) <= 1
    flat = gap_trend(_curves({0: 0.02, 10: -0.03, 20: 0.01, 30: -0.01}), "pets-ood")
    assert flat["slope_ci"][0] <= 0 and flat["batches_to_gap"] is None
    assert gap_trend(_curves({0: 0.0, 10: 0.01}), "pets-ood") is None  # too few probes for a line
    assert gap_trend(_curves({0: 0.0, 10: 0.01, 20: 0.02}), "uf-p-2-synthetic") is None
    assert gap_trend(pd.DataFrame(), "pets-ood") is None


def test_levers_are_set_from_the_command_line():
    assert config_changes(["reward_epochs=1", "temperature=1.0", "estimator=grpo", "summary_prefix="]) == {
        "reward_epochs": 1, "temperature": 1.0, "estimator": "grpo", "summary_prefix": "",
    }  # fmt: skip
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        config_changes(["reward_epochs"])
    with pytest.raises(ValueError, match="CoadaptConfig has no field 'reward_epoch'"):
        config_changes(["reward_epoch=1"])
    settings = ablation_settings("smoke", changes=config_changes(["reward_epochs=1"]))
    assert Ablation(settings, Path("unused")).config("pets-ood", "plus", 0).reward_epochs == 1


def test_curves_hold_only_the_variants_of_the_settings(tmp_path):
    settings = ablation_settings("smoke", variants=("plus", "btl"))
    assert settings.loop_variants == ("plus",)
    experiment = Ablation(settings, tmp_path)
    for variant in ("plus", "plus-static-rm"):  # the second one: another run in the same folder, still training
        directory = experiment.run_dir("pets-ood", variant, 0)
        directory.mkdir(parents=True)
        (directory / "probe.jsonl").write_text(json.dumps({"step": 0, "heldout/accuracy": 0.5}) + "\n")
    assert set(experiment.curves()["variant"]) == {"plus"}
