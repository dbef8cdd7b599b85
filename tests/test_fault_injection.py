"""A real PLUS run, SIGKILLed at several points, resumes to exactly what an uninterrupted run gives.

Every run here is a subprocess on one thread (so the arithmetic is the same in each): the uninterrupted run,
the run killed at one point, and the resume of the killed run in its own folder. The kill points are the
moments a crash can hit: between two rollout batches (its metrics logged, its checkpoint not yet written),
inside the checkpoint write (between two files, and halfway through a file), and right after it. The resumed
run must end with bitwise the same weights, optimizer states and logs (less wall times) as the uninterrupted one.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow

CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path

import torch
torch.set_num_threads(1)
import plus.coadapt.checkpoint as checkpoint
import plus.coadapt.loop as loop
from test_coadapt import ByteRewardModel, _config, _records

kill, output = os.environ.get("KILL_AT", ""), Path(sys.argv[1])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
saving = {{"step": None, "files": 0}}
real_save, real_file = loop.save_checkpoint, checkpoint.save_file

def save_checkpoint(directory, step, *args, **kwargs):
    if kill == "between-batches" and step == 2:
        die()  # batch 2 is logged, its checkpoint not written
    saving.update(step=step, files=0)
    real_save(directory, step, *args, **kwargs)
    if kill == "after-checkpoint" and step == 2:
        die()

def save_file(tensors, path):
    saving["files"] += 1
    if saving["step"] == 2 and saving["files"] == 3:
        if kill == "between-files":
            die()
        if kill == "mid-file":
            real_file(tensors, path)
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
            die()
    real_file(tensors, path)

loop.save_checkpoint, checkpoint.save_file = save_checkpoint, save_file
config = _config(separate_critic=True, checkpoint_every=1, num_episodes=2, rollout_batch_size=2,
                 train_batch_size=1, micro_batch_size=1)
loop.train_plus(config, _records(4), output, reward_model=ByteRewardModel())
"""


def run(output: Path, kill: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT": kill, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script = CHILD.format(tests=str(TESTS))
    return subprocess.run(
        [sys.executable, "-c", script, str(output)], env=env, capture_output=True, text=True, timeout=600
    )


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{p.name}/{k}": v for p in sorted(folder.glob("*.safetensors")) for k, v in load_file(p).items()}


def logs(folder: Path, name: str) -> list[dict]:
    rows = [json.loads(line) for line in (folder / name).read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = run(output)
    assert done.returncode == 0, done.stderr[-3000:]
    return output


@pytest.mark.parametrize("kill", ["between-batches", "between-files", "mid-file", "after-checkpoint"])
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, kill):
    output = tmp_path / "run"
    killed = run(output, kill)
    assert killed.returncode == -9, f"the run was not killed at {kill}: {killed.stderr[-2000:]}"
    assert not (output / "final").exists()
    resumed = run(output)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for folder in ("final", "checkpoint"):  # weights; then optimizer, scheduler and RNG states too
        expected, got = tensors(uninterrupted / folder), tensors(output / folder)
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            assert torch.equal(value, got[key]), f"{folder}/{key} differs after a kill {kill}"
    state = "checkpoint/state.json"
    assert json.loads((output / state).read_text()) == json.loads((uninterrupted / state).read_text())
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        assert logs(output, name) == logs(uninterrupted, name), f"{name} differs after a kill {kill}"
    assert sorted(p.name for p in output.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]


RM_CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path

import torch
torch.set_num_threads(1)
import plus.train as train
from test_train import CONFIG, fresh
from toy_users import toy_records
from plus.baselines import TextEmbedder
from dataclasses import replace

kill, output = os.environ.get("KILL_AT", ""), Path(sys.argv[1])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
saving = {{"step": None, "files": 0}}
real_save, real_file = train._save_resume, train.save_file

def save_resume(directory, step, *args, **kwargs):
    if kill == "between-steps" and step == 6:
        die()  # step 6 is logged, its checkpoint not written (the last one, step 5, is inside epoch 2)
    saving.update(step=step, files=0)
    real_save(directory, step, *args, **kwargs)
    if kill == "after-checkpoint" and step == 6:
        die()

def save_file(tensors, path):
    saving["files"] += 1
    if saving["step"] == 6 and saving["files"] == 2:
        if kill == "between-files":
            die()
        if kill == "mid-file":
            real_file(tensors, path)
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
            die()
    real_file(tensors, path)

train._save_resume, train.save_file = save_resume, save_file
method = fresh("btl", TextEmbedder("tiny-encoder"))
train.train_reward_model(method, toy_records(16, 0), replace(CONFIG, num_epochs=2), output, checkpoint_every=1)
"""


def run_reward_model(output: Path, kill: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT": kill, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script = RM_CHILD.format(tests=str(TESTS))
    return subprocess.run(
        [sys.executable, "-c", script, str(output)], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def uninterrupted_reward_model(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted-rm") / "run"
    done = run_reward_model(output)
    assert done.returncode == 0, done.stderr[-3000:]
    return output


@pytest.mark.parametrize("kill", ["between-steps", "between-files", "mid-file", "after-checkpoint"])
def test_reward_model_training_killed_at_any_point_resumes_to_the_uninterrupted_result(
    uninterrupted_reward_model, tmp_path, kill
):
    output = tmp_path / "run"
    killed = run_reward_model(output, kill)
    assert killed.returncode == -9, f"the run was not killed at {kill}: {killed.stderr[-2000:]}"
    assert not (output / "checkpoint").exists() and (output / "resume").exists()
    resumed = run_reward_model(output)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = tensors(uninterrupted_reward_model / "checkpoint"), tensors(output / "checkpoint")
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), f"{key} differs after a kill {kill}"
    assert logs(output, "metrics.jsonl") == logs(uninterrupted_reward_model, "metrics.jsonl")
    assert len(logs(output, "metrics.jsonl")) == 8
    assert not any(p.name.startswith("resume") for p in output.iterdir())  # removed once the run finished
