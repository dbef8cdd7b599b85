import json
import math

import pandas as pd
import pytest
import torch

from plus.artifacts import write_table
from plus.coadapt import CoadaptConfig, coadapt_config, train_plus
from plus.control import (
    LEVERS,
    RUNGS,
    flat_group_share,
    ideal_records,
    ladder_note,
    ladder_rows,
    ladder_summary,
    ladder_table,
    learned,
    named_shares,
    pets_probe,
    pets_profiles,
    pets_reward,
    read_curves,
    readout,
    rung_config,
    share_interval,
    steps_to_plateau,
)
from plus.data.pets import contested_animals
from plus.data.registry import build_dataset
from plus.reward_model import RewardModelConfig, SummaryRewardModel
from plus.summarizer import next_word_probs


@pytest.fixture(scope="module")
def pets():
    return build_dataset("pets", seed=0, num_train=8, num_test=4)


def _summaries(records, label):
    words = {"own": 0, "other": 1}
    if label == "neither":
        return ["This user prefers responses about fish." for _ in records]
    return [
        f"This user prefers responses about {contested_animals(r['ground_truth']['profile'])[words[label]]}s."
        for r in records
    ]


def _config(**changes) -> CoadaptConfig:
    values = dict(
        summarizer_model="tiny-chat-lm",
        reward_model=RewardModelConfig(backbone="tiny-encoder", max_length=64),
        rollout_batch_size=4,
        train_batch_size=4,
        micro_batch_size=4,
        max_summary_tokens=3,
        estimator="rloo",
        num_samples=2,
        separate_critic=False,
        warmup_ratio=0.0,
        num_episodes=2,
        train_reward_model=False,
        summary_prefix="This user prefers responses about",
        prefill_marker=True,
    )
    return CoadaptConfig(**(values | changes))


@pytest.mark.parametrize(("label", "reward"), [("own", 1.0), ("other", -1.0), ("neither", 0.0)])
def test_pets_reward_scores_the_animal_named_first(pets, label, reward):
    assert pets_reward(pets, _summaries(pets, label)).tolist() == [reward] * len(pets)


def test_pets_reward_reads_only_the_first_animal_named(pets):
    record = pets[0]
    own, other = contested_animals(record["ground_truth"]["profile"])
    assert pets_reward([record, record], [f"{other}s, then {own}s", f"{own}s, not {other}s"]).tolist() == [-1, 1]


def test_pets_reward_names_a_record_without_a_profile(pets):
    with pytest.raises(ValueError, match="u-x.*ground_truth.profile"):
        pets_reward([{"user_id": "u-x"}], ["dogs"])
    with pytest.raises(ValueError, match="2 records for 1 summaries"):
        pets_reward(pets[:2], ["dogs"])


def test_rung_config_sets_length_and_which_model_trains():
    config = _config(max_summary_tokens=24)
    assert rung_config(config, "first-word").max_summary_tokens == 1
    assert rung_config(config, "ground-truth").max_summary_tokens == 24
    assert not any(rung_config(config, rung).train_reward_model for rung in RUNGS[:3])
    assert rung_config(config, "plus").train_reward_model
    assert all(rung_config(config, rung).train_reward_model for rung in LEVERS)
    with pytest.raises(ValueError, match="Unknown rung 'second-word'"):
        rung_config(config, "second-word")


def test_ideal_records_describe_the_user_by_the_own_animal(pets):
    for record, ideal in zip(pets, ideal_records(pets, "Likes"), strict=True):
        own = contested_animals(record["ground_truth"]["profile"])[0]
        assert ideal["ground_truth"]["description"] == f"Likes {own}s."
        assert ideal["context"] == record["context"] and record["ground_truth"]["description"] != f"Likes {own}s."


def test_steps_to_plateau_finds_where_the_curve_settles():
    curve = pd.Series([0.1, 0.3, 0.6, 0.8, 0.82, 0.79, 0.81, 0.8], index=range(0, 80, 10))
    assert steps_to_plateau(curve) == 30
    assert steps_to_plateau(pd.Series([0.5, 0.51, 0.49, 0.5])) == 0
    assert steps_to_plateau(pd.Series([0.1, 0.5, 0.9])) is None  # too short to tell


def test_a_curve_still_rising_has_no_plateau():
    assert steps_to_plateau(pd.Series([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]), window=3, tolerance=0.05) is None
    assert steps_to_plateau(pd.Series([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]), window=3, tolerance=0.1) == 4


def test_named_shares_per_rollout_batch(pets):
    profiles = pets_profiles(pets)
    assert profiles[pets[0]["user_id"]] == pets[0]["ground_truth"]["profile"]
    with pytest.raises(ValueError, match="no ground_truth.profile"):
        pets_profiles([{"user_id": "u-x", "ground_truth": {}}])
    own, other = _summaries(pets[:1], "own")[0], _summaries(pets[:1], "other")[0]
    rows = [
        {"step": 0, "user_id": pets[0]["user_id"], "summary": own},
        {"step": 0, "user_id": pets[0]["user_id"], "summary": other},
        {"step": 1, "user_id": pets[0]["user_id"], "summary": own},
    ]
    shares = named_shares(rows, profiles)
    assert shares.to_dict("index") == {0: {"own": 0.5, "other": 0.5, "neither": 0.0},
                                       1: {"own": 1.0, "other": 0.0, "neither": 0.0}}  # fmt: skip
    assert list(named_shares([], profiles).columns) == ["own", "other", "neither"]
    with pytest.raises(ValueError, match="no profile for users \\['u-unknown'\\]"):
        named_shares([{**rows[0], "user_id": "u-unknown"}], profiles)


def test_probe_is_seeded_leaves_the_rng_alone_and_reads_the_first_word(pets, tiny_chat_lm):
    model, tokenizer = tiny_chat_lm
    test = [r for r in pets if r["split"] == "test"]
    config = _config(temperature=0.7)
    probe = pets_probe(test, config, batch_size=2)
    loop_reward_model = SummaryRewardModel(RewardModelConfig(backbone="tiny-encoder", max_length=64)).eval()
    state = torch.random.get_rng_state()
    first = probe(model, tokenizer, loop_reward_model)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not loop_reward_model.training  # the probe leaves the loop's reward model in the mode it found
    assert probe(model, tokenizer, loop_reward_model.train()) == first
    assert loop_reward_model.training
    reads = readout(loop_reward_model, test, config.summary_prefix, batch_size=2)
    assert first["loop/reads_own"] == pytest.approx(reads["own"]) and first["loop/reads_other"] == reads["other"]
    assert 0.0 <= first["loop/contested_accuracy"] <= 1.0
    assert math.isclose(sum(first[f"named/{label}"] for label in ("own", "other", "neither")), 1.0)
    animals = [[f"{a}s" for a in contested_animals(r["ground_truth"]["profile"])] for r in test]
    expected = next_word_probs(
        model, tokenizer, [r["context"] for r in test], animals, temperature=0.7, batch_size=2,
        prefill_marker=True, summary_prefix=config.summary_prefix,
    )  # fmt: skip
    assert first["first_word/own"] == pytest.approx(float(expected[:, 0].mean()), rel=1e-4)
    assert first["first_word/other"] == pytest.approx(float(expected[:, 1].mean()), rel=1e-4)
    assert "heldout/accuracy" not in first
    with pytest.raises(ValueError, match="at least one held-out record"):
        pets_probe([], config)


def test_a_known_reward_drives_the_rollout_and_the_probe_is_logged_and_cut_on_resume(pets, tmp_path):
    train = [r for r in pets if r["split"] == "train"]  # 8 records: 2 rollout batches per episode
    seen = []

    def reward_fn(records, summaries):  # a known reward; the loop must use it as it is (within the clip)
        seen.append([r["user_id"] for r in records])
        return torch.linspace(-1.0, 1.0, len(summaries))

    def probe(policy, tokenizer, reward_model):
        return {"probe/parameters": float(sum(p.detach().abs().sum() for p in policy.parameters()))}

    config = _config(checkpoint_every=1, num_episodes=1)
    steps = []
    train_plus(config, train, tmp_path, reward_fn=reward_fn, probe=probe, probe_every=1, stop_after=1,
               on_rollout=lambda step, records, batch: steps.append((records, batch.scores.clone())))  # fmt: skip
    records, scores = steps[0]
    assert seen[0] == [r["user_id"] for r in records for _ in range(2)]  # each record once per sample, in order
    assert torch.allclose(scores, torch.linspace(-1.0, 1.0, 8))
    rows = [json.loads(line) for line in (tmp_path / "probe.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1]
    with (tmp_path / "probe.jsonl").open("a") as handle:  # a killed run probed once more after its checkpoint
        handle.write(json.dumps({**rows[-1], "step": 2}) + "\n")
    train_plus(config, train, tmp_path, reward_fn=reward_fn, probe=probe, probe_every=1)
    metrics, probes = read_curves(tmp_path)
    assert list(probes.index) == [0, 1, 2] and list(metrics.index) == [1, 2]
    assert probes["probe/parameters"].iloc[0] != probes["probe/parameters"].iloc[-1]


@pytest.mark.parametrize(
    ("rewards", "message"),
    [(lambda n: torch.zeros(n + 1), "shape"), (lambda n: torch.full((n,), float("nan")), "non-finite")],
)
def test_a_bad_reward_fn_is_a_clear_error(pets, tmp_path, rewards, message):
    train = [r for r in pets if r["split"] == "train"]
    with pytest.raises(ValueError, match=f"reward_fn returned {message}"):
        train_plus(_config(), train, tmp_path, reward_fn=lambda records, summaries: rewards(len(summaries)))


def test_the_summarizer_waits_summarizer_start_batches_while_the_reward_model_trains(pets, tmp_path):
    train = [r for r in pets if r["split"] == "train"]

    def probe(policy, tokenizer, reward_model):
        return {
            "probe/summarizer": float(sum(p.detach().abs().sum() for p in policy.parameters() if p.requires_grad)),
            "probe/reward_model": float(sum(p.detach().abs().sum() for p in reward_model.parameters())),
        }

    def reward_fn(records, summaries):  # distinct rewards, so every batch's summarizer update moves its weights
        return torch.linspace(-1.0, 1.0, len(summaries))

    config = _config(num_episodes=1, summarizer_start=1, train_reward_model=True)
    train_plus(config, train, tmp_path, reward_fn=reward_fn, probe=probe, probe_every=1)
    _, probes = read_curves(tmp_path)
    assert list(probes.index) == [0, 1, 2]
    summarizer, reward_model = probes["probe/summarizer"], probes["probe/reward_model"]
    assert summarizer[0] == summarizer[1] != summarizer[2]  # no update in the first batch, one in the second
    assert reward_model[0] != reward_model[1] != reward_model[2]
    with pytest.raises(ValueError, match="summarizer_start"):
        _config(summarizer_start=-1)


def test_probe_every_must_be_positive(pets, tmp_path):
    train = [r for r in pets if r["split"] == "train"]
    with pytest.raises(ValueError, match="probe_every"):
        train_plus(_config(), train, tmp_path, probe=lambda policy, tokenizer: {}, probe_every=0)


def test_coadapt_config_follows_the_profile():
    cpu, gpu = coadapt_config("cpu"), coadapt_config("gpu")
    assert (cpu.estimator, cpu.lora, cpu.lora_top_layers, cpu.temperature) == ("rloo", True, 8, 0.7)
    assert cpu.summary_prefix and cpu.prefill_marker and cpu.reward_model.num_trainable_layers == 4
    assert (gpu.estimator, gpu.lora, gpu.separate_critic, gpu.temperature) == ("ppo", False, True, 1.0)
    assert (gpu.actor_lr, gpu.summary_prefix, gpu.prefill_marker) == (5e-7, "", False)
    assert gpu.summarizer_model != cpu.summarizer_model
    assert coadapt_config("cpu", actor_lr=3e-4, seed=2).actor_lr == 3e-4
    assert coadapt_config("smoke").max_steps == 1
    with pytest.raises(ValueError, match="Unknown profile 'laptop'"):
        coadapt_config("laptop")


def test_share_interval_is_wilson():
    low, high = share_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert share_interval(0.0, 10)[0] == 0.0 and share_interval(1.0, 10)[1] == 1.0
    with pytest.raises(ValueError, match="n=0"):
        share_interval(0.5, 0)


def _write_rung(directory, own, accuracy, loop=False):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"num_samples": 2}))
    with (directory / "rollouts.jsonl").open("w") as handle:  # 2 contexts x 2 samples per batch
        for step in range(1, 21):
            rewards = [1.0, 1.0, -1.0, 1.0] if step <= 10 else [1.0, 1.0, 0.0, 0.0]
            handle.writelines(json.dumps({"step": step, "reward": reward}) + "\n" for reward in rewards)
    with (directory / "metrics.jsonl").open("w") as handle:
        for step in range(1, 21):
            row = {"step": step, "perf/seconds_per_step": 3.0, "summarizer/reward": step / 20, "summarizer/kl": 0.1}
            handle.write(json.dumps(row) + "\n")
    with (directory / "probe.jsonl").open("w") as handle:
        for step, (o, a) in zip(range(0, 25, 5), zip(own, accuracy, strict=True), strict=True):
            row = {"step": step, "named/own": o, "named/other": 0.1, "heldout/contested_accuracy": a,
                   "perf/probe_seconds": 6.0}  # fmt: skip
            if loop:  # the loop's reward model stops reading the summary
                row |= {"loop/contested_accuracy": a, "loop/reads_own": 1.0 - step / 40, "loop/reads_other": step / 40}
            handle.write(json.dumps(row) + "\n")


def test_ladder_rows_table_and_note_read_the_runs(pets, tmp_path):
    test = [r for r in pets if r["split"] == "test"] * 25  # 100 held-out contexts
    _write_rung(tmp_path / "first-word", [0.1, 0.5, 0.8, 0.82, 0.8], [0.5, 0.6, 0.9, 0.9, 0.9])
    _write_rung(tmp_path / "ground-truth", [0.1, 0.12, 0.1, 0.11, 0.12], [0.5, 0.5, 0.5, 0.5, 0.5])
    rows = ladder_rows(tmp_path, test)
    assert [row["rung"] for row in rows] == ["first-word", "ground-truth"]  # rungs not run are left out
    first, flat = rows
    assert (first["steps"], first["seconds_per_step"], first["minutes"]) == (20, 3.0, 1.5)
    assert first["named/own@start"] == 0.1 and first["named/own@end"] == 0.8
    assert first["named/own@plateau_step"] == 10 and flat["named/own@plateau_step"] == 0
    assert first["reward_last10"] == pytest.approx(sum(range(11, 21)) / 200)
    assert learned(first) and not learned(flat)
    assert (first["flat_groups_first10"], first["flat_groups_last10"]) == (0.5, 1.0)
    table = ladder_table(rows, test)
    write_table(tmp_path / "table.json", table)  # the shared format's checks
    assert {(row["method"], row["metric"]) for row in table} == {
        (f"control-{rung}", metric)
        for rung in ("first-word", "ground-truth")
        for metric in ("own_named_share", "accuracy")
    }
    shown = ladder_summary(rows)
    assert list(shown.columns) == ["first-word", "ground-truth"]
    assert shown.loc["own animal named first: end", "first-word"] == "80%"
    assert shown.loc["rollout batches", "first-word"] == "20"
    flat["heldout/contested_accuracy@plateau_step"] = None
    assert ladder_summary(rows).loc["contested accuracy: plateau (batch)", "ground-truth"] == "not reached"
    note = ladder_note(rows, {"own": 1.0, "other": 0.0}, test)
    assert (
        "(holds)" in note
        and "80% [" in note
        and "plateau from batch 10" in note
        and "KL to the reference 0.10" in note
    )
    assert "{" not in note
    assert "Does not: whole summary, known reward." in note
    assert "does not hold" in ladder_note(rows, {"own": 0.6, "other": 0.4}, test)
    assert "its own reward model" not in note  # these rungs' probes did not measure it
    _write_rung(tmp_path / "plus-ideal-init", [0.1, 0.2, 0.3, 0.3, 0.3], [0.5] * 5, loop=True)
    row = ladder_rows(tmp_path, test, ["plus-ideal-init"])[0]
    assert (row["loop/reads_own@start"], row["loop/reads_own@end"], row["loop/reads_other@end"]) == (1.0, 0.5, 0.5)
    note = ladder_note([row], {"own": 1.0, "other": 0.0}, test)
    assert "right 100% / 0% of the time before training and 50% / 50% at the last probe" in note


def test_flat_group_share_counts_contexts_without_a_learning_signal():
    assert flat_group_share([1, 1, 1, 0, 0.5, 0.5], 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="5 rewards do not split into groups of 2"):
        flat_group_share([1, 1, 1, 0, 0], 2)


def test_readout_needs_contested_records(pets):
    with pytest.raises(ValueError, match="contested"):
        readout(None, [{**r, "contested": False} for r in pets], "Likes")


def test_a_finished_rung_is_read_not_trained_again_unless_its_config_or_logs_differ(tmp_path):
    from plus.control import ladder

    experiment = ladder("smoke", tmp_path)
    assert not experiment.finished("plus-rm-warmup")
    assert experiment.run("plus-rm-warmup") is not None
    directory = experiment.rung_dir("plus-rm-warmup")
    assert experiment.finished("plus-rm-warmup") and experiment.run("plus-rm-warmup") is None
    written = json.loads((directory / "config.json").read_text())
    assert written["summarizer_start"] == 1 and written["train_reward_model"]
    probes = (directory / "probe.jsonl").read_text().splitlines()
    (directory / "probe.jsonl").write_text("\n".join(probes[:-1]) + "\n")  # a run killed before its last probe
    assert not experiment.finished("plus-rm-warmup")
    (directory / "probe.jsonl").write_text("\n".join(probes) + "\n")
    (directory / "config.json").write_text(json.dumps({**written, "actor_lr": 0.5}))  # another config
    assert not experiment.finished("plus-rm-warmup")
    (directory / "config.json").write_text("{}")  # not a config at all
    assert not experiment.finished("plus-rm-warmup")
    # a lever (`--set`) changes the loop's config only: the cached ideal-summary reward model is reused
    changed = ladder("smoke", tmp_path, changes={"reward_lr": 0.5})
    assert changed.rung_config("plus").reward_lr == 0.5 and experiment.rung_config("plus").reward_lr != 0.5
    (directory / "config.json").write_text(json.dumps(written))
    assert experiment.finished("plus-rm-warmup") and not changed.finished("plus-rm-warmup")
    slow = experiment.rung_config("plus-slow-rm")  # plus-ideal-init's start with a slower reward model
    assert (slow.reward_epochs, slow.reward_lr) == (1, 3e-4) and slow.max_steps == experiment.steps("plus")
    assert rung_config(slow, "plus-slow-rm").train_reward_model
