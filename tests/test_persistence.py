"""Checkpoint folders: complete only with a manifest that verifies; a damaged one is skipped, never mixed in."""

import json
import logging
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file
from toy_users import toy_records

import plus.train as train
from plus.persistence import MANIFEST, STATE, incoming_dir, manifest_problem, newest_complete, swap_in, write_manifest


def _checkpoint(final, step):
    incoming = incoming_dir(final)
    save_file({"w": torch.full((64,), float(step))}, str(incoming / "weights.safetensors"))
    (incoming / STATE).write_text(json.dumps({"step": step}))
    write_manifest(incoming)
    swap_in(incoming, final)


def test_a_checkpoint_is_complete_once_its_manifest_verifies_and_the_newest_is_taken(tmp_path):
    final = tmp_path / "resume"
    assert newest_complete(final) is None
    _checkpoint(final, 1)
    _checkpoint(final, 2)
    assert newest_complete(final) == final and json.loads((final / STATE).read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume"]  # the previous one went once the new was in
    incoming = incoming_dir(final)  # a write that never finished is ignored
    (incoming / "weights.safetensors").write_bytes(b"half")
    assert newest_complete(final) == final


def test_a_damaged_checkpoint_is_skipped_for_the_previous_one_or_is_a_clear_error(tmp_path, caplog):
    final = tmp_path / "resume"
    _checkpoint(final, 1)
    previous = final.with_name("resume.previous")
    _checkpoint(previous, 0)  # as a kill between the two renames leaves it
    data = (final / "weights.safetensors").read_bytes()
    (final / "weights.safetensors").write_bytes(data[: len(data) // 2])
    assert "weights.safetensors has" in manifest_problem(final)
    with caplog.at_level(logging.WARNING, logger="plus.persistence"):
        assert newest_complete(final) == previous
    assert "Skipping a damaged checkpoint" in caplog.text and "weights.safetensors" in caplog.text
    (previous / "weights.safetensors").write_bytes(b"x" * len(data))  # same size, other bytes
    with pytest.raises(ValueError, match="No intact checkpoint.*does not match the sha256"):
        newest_complete(final)
    (previous / MANIFEST).unlink()
    (previous / STATE).unlink()
    with pytest.raises(ValueError, match="No intact checkpoint.*weights.safetensors has"):
        newest_complete(final)


def test_a_checkpoint_from_before_manifests_is_taken_with_a_warning(tmp_path, caplog):
    final = tmp_path / "checkpoint"
    final.mkdir()
    (final / STATE).write_text(json.dumps({"step": 3}))
    with caplog.at_level(logging.WARNING, logger="plus.persistence"):
        assert newest_complete(final) == final
    assert "unverified" in caplog.text


def test_a_reward_model_resume_refuses_other_records_or_another_config(tmp_path, monkeypatch):
    from test_train import CONFIG, fresh

    from plus.baselines import TextEmbedder

    embedder, records = TextEmbedder("tiny-encoder"), toy_records(16, 0)
    real = train._save_resume

    def interrupt(directory, step, *args, **kwargs):
        real(directory, step, *args, **kwargs)
        if step == 2:
            raise KeyboardInterrupt  # the run stops with a checkpoint at step 2

    monkeypatch.setattr(train, "_save_resume", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.train_reward_model(fresh("btl", embedder), records, CONFIG, tmp_path, checkpoint_every=1)
    monkeypatch.setattr(train, "_save_resume", real)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="other training records"):
        train.train_reward_model(fresh("btl", embedder), toy_records(16, 1), CONFIG, tmp_path)
    with pytest.raises(ValueError, match="another TrainConfig \\(differs in learning_rate\\)"):
        train.train_reward_model(fresh("btl", embedder), records, replace(CONFIG, learning_rate=5e-4), tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics  # nothing written is lost
    result = train.train_reward_model(fresh("btl", embedder), records, CONFIG, tmp_path)
    assert [row["step"] for row in result.metrics] == [0, 1, 2, 3] and not (tmp_path / "resume").exists()
    with pytest.raises(ValueError, match="checkpoint_every must be"):
        train.train_reward_model(fresh("btl", embedder), records, CONFIG, tmp_path, checkpoint_every=-1)
