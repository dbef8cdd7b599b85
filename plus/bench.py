"""Seconds per PLUS rollout batch, side by side in one process: the shared-context path, the plain reference path
and TRL's ``RLOOTrainer`` on the same records, models and shape.

    python -m plus.bench                              # notebook 04's shape (RLOO), all three, cpu profile
    python -m plus.bench --estimator ppo --methods plus,plus_reference --output results/cpu/bench/plus_step_ppo.json

Each method starts from fresh models, runs ``warmup_steps`` rollout batches that are not timed, then
``steps`` that are; the figure is the mean wall time of the timed ones. A rollout batch is everything PLUS does
for it: sample the summaries, score them with the reward model, the summarizer's update and the reward model's
update (``reward_epochs`` passes) on the same summaries. TRL's trainer gets the same work: the same prompts
(the summarizer's chat prompt with the prefilled marker and prefix), the same LoRA adapters (`plus.coadapt`'s
builder), K, temperature, summary cap, KL coefficient, learning rate and micro-batch, and a reward function that
scores with the same reward model and then trains it on the same summaries, as PLUS's step 4 does.

Machines are noisy and absolute times move between runs: the ratios in one run are the figures to read. Peak
resident memory is sampled while each method runs (it includes what the process held before it started).
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F

from plus.artifacts import read_json, read_metrics, write_json
from plus.coadapt import CoadaptConfig, RewardScorer, RolloutBatch, score_summaries, train_plus, update_reward_model
from plus.coadapt.loop import _optimizer, _trainable, _with_lora
from plus.config import get_profile
from plus.data.registry import build_dataset
from plus.models import load_causal_lm
from plus.reward_model import RewardModelConfig, SummaryRewardModel
from plus.summarizer import assistant_prefill, build_queries, parse_summary

logger = logging.getLogger(__name__)

METHODS = ("plus", "plus_reference", "trl_rloo")
"""``plus``: the shared-context path (the default); ``plus_reference``: the plain path; ``trl_rloo``: TRL."""
BENCH_FILES = {"rloo": "plus_step.json", "ppo": "plus_step_ppo.json"}
"""The file `make bench` writes for each estimator, under ``results/<profile>/bench/``."""


@dataclass(frozen=True)
class BenchConfig:
    """The shape of the benchmark. Defaults: notebook 04's cpu run (8 Pets contexts x 4 RLOO samples)."""

    profile: str = "cpu"
    """Models (`plus.config` profile): the summarizer and the reward model's backbone."""
    estimator: str = "rloo"
    """``rloo`` (notebook 04) or ``ppo`` (a separate critic copied from the summarizer, the paper's)."""
    num_contexts: int = 8
    """Contexts per rollout batch."""
    num_samples: int = 4
    """Summaries per context (``rloo``); ``ppo`` samples one summary of each of num_contexts x num_samples contexts,
    so both shapes generate the same number of summaries."""
    max_summary_tokens: int = 24
    """Cap on generated summary tokens after the prefix."""
    lora_top_layers: int = 8
    """LoRA adapters on the top k blocks of the summarizer (and of the critic)."""
    reward_epochs: int = 4
    """Passes of the reward model's update over each rollout batch."""
    micro_batch_size: int = 8
    """Rows per forward pass, for every method."""
    warmup_steps: int = 1
    """Rollout batches run before timing."""
    steps: int = 2
    """Rollout batches timed."""
    seed: int = 0
    """Data and training seed."""

    def __post_init__(self) -> None:
        for name in ("num_contexts", "num_samples", "max_summary_tokens", "lora_top_layers", "reward_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"BenchConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.estimator not in ("rloo", "ppo"):
            raise ValueError(f"BenchConfig.estimator must be 'rloo' or 'ppo', got {self.estimator!r}")
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError(
                f"BenchConfig needs steps >= 1 and warmup_steps >= 0, got {self.steps}, {self.warmup_steps}"
            )

    @classmethod
    def for_profile(cls, profile: str, estimator: str = "rloo") -> BenchConfig:
        """Notebook 04's shape at ``cpu`` and ``gpu`` (the models differ); a seconds-long one at ``smoke``."""
        if profile == "smoke":
            return cls(profile, estimator, num_contexts=2, num_samples=2, max_summary_tokens=4, steps=1)
        return cls(profile, estimator)

    @property
    def num_steps(self) -> int:
        return self.warmup_steps + self.steps

    @property
    def contexts_per_step(self) -> int:
        return self.num_contexts if self.estimator == "rloo" else self.num_contexts * self.num_samples


def coadapt_config(bench: BenchConfig, shared_context: bool = True) -> CoadaptConfig:
    """Notebook 04's PLUS config at the benchmark's shape."""
    settings = get_profile(bench.profile)
    smoke = bench.profile == "smoke"
    return CoadaptConfig(
        summarizer_model=settings.summarizer_model,
        reward_model=RewardModelConfig(
            backbone=settings.reward_model, max_length=settings.max_length, num_trainable_layers=None if smoke else 2
        ),
        seed=bench.seed,
        rollout_batch_size=bench.contexts_per_step,
        train_batch_size=bench.contexts_per_step,
        micro_batch_size=bench.micro_batch_size,
        max_summary_tokens=bench.max_summary_tokens,
        max_steps=bench.num_steps,
        estimator=bench.estimator,
        num_samples=bench.num_samples,
        temperature=0.7,
        prefill_marker=True,
        summary_prefix="This user prefers responses about",
        lora=True,
        lora_top_layers=None if smoke else bench.lora_top_layers,
        separate_critic=True,
        actor_lr=1e-3,
        critic_lr=1e-3,
        reward_lr=2e-3,
        reward_epochs=bench.reward_epochs,
        shared_context=shared_context,
    )


class PeakMemory:
    """Samples this process's resident memory every ``interval`` seconds while in use; ``peak_mb`` afterwards."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class MethodTiming:
    """One method's measurements."""

    step_seconds: list[float]
    """Wall time of every rollout batch, warm-up included."""
    generated_tokens: list[int]
    """Summary tokens generated in every rollout batch."""
    peak_rss_mb: float
    stage_seconds: list[dict[str, float]] | None = None
    """PLUS's own timing of each stage of every rollout batch (``perf/*_seconds`` in its metrics.jsonl)."""


def _run_plus(bench: BenchConfig, records: list[dict], workdir: Path, shared_context: bool) -> MethodTiming:
    config = coadapt_config(bench, shared_context)
    run = workdir / ("plus" if shared_context else "plus_reference")
    with PeakMemory() as memory:
        train_plus(config, records, run, progress=False)
    rows = read_metrics(run / "metrics.jsonl")
    tokens = [round(row["summarizer/length"] * config.rollout_batch_size * config.samples_per_context) for row in rows]
    stages = [
        {k.removeprefix("perf/").removesuffix("_seconds"): v for k, v in row.items() if k.endswith("_seconds")}
        for row in rows
    ]
    return MethodTiming([row["perf/seconds_per_step"] for row in rows], tokens, memory.peak_mb, stages)


def _run_trl_rloo(bench: BenchConfig, records: list[dict], workdir: Path) -> MethodTiming:
    """TRL's ``RLOOTrainer`` on the same work (module docstring)."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    config = coadapt_config(bench)
    if config.estimator != "rloo":
        raise ValueError("trl_rloo runs only at the rloo shape")
    policy, tokenizer = load_causal_lm(config.summarizer_model, device="cpu")
    policy = _with_lora(policy, config)
    prefill = assistant_prefill(config.prefill_marker, config.summary_prefix)
    prompts = build_queries(tokenizer, [r["context"] for r in records], config.prefill_marker, config.summary_prefix)
    dataset = Dataset.from_dict({"prompt": prompts, "record": list(range(len(records)))})
    scorer = RewardScorer(SummaryRewardModel(config.reward_model, device=torch.device("cpu")))
    optimizer = _optimizer(_trainable(scorer), config.reward_lr, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    tokens: list[int] = []

    def reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]], record: list[int], **_):
        """PLUS's steps 2 and 4 for TRL: score with the reward model before its update, then update it on the
        same summaries."""
        tokens.append(sum(len(ids) for ids in completion_ids))
        summaries = []
        for text in completions:
            summaries.append(parse_summary(prefill + text).text if text.strip() else "")
        part = [records[i] for i in record]
        margins = score_summaries(scorer, summaries, part, "reward", config.micro_batch_size)
        scores = F.logsigmoid(margins).clamp(-config.reward_clip, config.reward_clip)
        empty = torch.zeros(len(part), 1, dtype=torch.long)
        batch = RolloutBatch(
            list(range(len(part))), summaries, ["ok"] * len(part), empty, empty, empty, empty, scores, margins
        )
        update_reward_model(
            replace(config, estimator="ppo", train_batch_size=len(part), rollout_batch_size=len(part)),
            batch,
            part,
            scorer,
            optimizer,
            schedule,
            _NoAccelerator(),
        )
        return scores.tolist()

    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *args, **kwargs):
            ends.append(time.perf_counter())

        def on_step_end(self, *args, **kwargs):
            ends.append(time.perf_counter())

    rows = config.rollout_batch_size * config.num_samples  # summaries per rollout batch, one optimizer step
    micro = min(config.micro_batch_size, rows)
    if rows % micro:
        raise ValueError(f"trl_rloo needs micro_batch_size ({micro}) to divide the {rows} summaries of a step")
    args = RLOOConfig(
        output_dir=str(workdir / "trl_rloo"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=rows // micro,
        num_generations=config.num_samples,
        max_completion_length=config.max_summary_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=0,
        beta=config.kl_coef,
        epsilon=config.policy_clip,
        num_iterations=config.ppo_epochs,
        normalize_advantages=config.whiten_advantages,
        learning_rate=config.actor_lr,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(config.warmup_ratio * bench.num_steps),  # as plus.coadapt's schedule
        adam_beta1=config.adam_betas[0],
        adam_beta2=config.adam_betas[1],
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        max_steps=bench.num_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=bench.seed,
        shuffle_dataset=False,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = RLOOTrainer(
        model=policy,
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepClock()],
    )
    trainer.remove_callback(PrinterCallback)  # its per-step log lines; the timings are returned
    with PeakMemory() as memory:
        trainer.train()
    seconds = [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]
    return MethodTiming(seconds, tokens, memory.peak_mb)


class _NoAccelerator:
    """What `plus.coadapt.update_reward_model` calls on an accelerator, for one plain process."""

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()

    @staticmethod
    def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def run_bench(bench: BenchConfig, methods: Sequence[str] = METHODS, workdir: str | Path | None = None) -> dict:
    """Time ``methods`` at ``bench``'s shape in this process; the result `main` writes as JSON."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"Unknown benchmark methods {unknown}; choose from {METHODS}")
    records = [
        r
        for r in build_dataset(
            "pets-ood", seed=bench.seed, num_train=bench.contexts_per_step * bench.num_steps, num_test=1
        )
        if r["split"] == "train"
    ][: bench.contexts_per_step * bench.num_steps]
    runners: dict[str, Callable[[Path], MethodTiming]] = {
        "plus": lambda d: _run_plus(bench, records, d, shared_context=True),
        "plus_reference": lambda d: _run_plus(bench, records, d, shared_context=False),
        "trl_rloo": lambda d: _run_trl_rloo(bench, records, d),
    }
    timings: dict[str, MethodTiming] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        for method in methods:
            logger.info("benchmark: %s", method)
            timings[method] = runners[method](Path(scratch))
            gc.collect()
    timed = slice(bench.warmup_steps, bench.num_steps)
    seconds = {m: sum(t.step_seconds[timed]) / bench.steps for m, t in timings.items()}
    tokens = {m: sum(t.generated_tokens[timed]) / sum(t.step_seconds[timed]) for m, t in timings.items()}
    _, tokenizer = load_causal_lm(coadapt_config(bench).summarizer_model, device="cpu")
    lengths = [
        len(tokenizer(p, add_special_tokens=False).input_ids)
        for p in build_queries(tokenizer, [r["context"] for r in records], True, "This user prefers responses about")
    ]
    result = {
        "shape": {
            **asdict(bench),
            "dataset": "pets-ood",
            "summaries_per_step": bench.num_contexts * bench.num_samples,
            "context_tokens": {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)},
            "summarizer": get_profile(bench.profile).summarizer_model,
            "reward_model": get_profile(bench.profile).reward_model,
            "threads": torch.get_num_threads(),
            "device": "cpu",
        },
        "seconds_per_step": seconds,
        "tokens_per_second": tokens,
        "peak_rss_mb": {m: t.peak_rss_mb for m, t in timings.items()},
        "step_seconds": {m: t.step_seconds for m, t in timings.items()},
        "stage_seconds": {
            m: {stage: sum(s[stage] for s in t.stage_seconds[timed]) / bench.steps for stage in t.stage_seconds[0]}
            for m, t in timings.items()
            if t.stage_seconds
        },
        "ratios": {
            f"{other}/plus": seconds[other] / seconds["plus"]
            for other in seconds
            if other != "plus" and "plus" in seconds
        },
    }
    return result


def read_or_run(directory: str | Path, profile: str, estimator: str, output_dir: str | Path) -> dict:
    """The benchmark of ``estimator`` that `make bench` wrote in ``directory``; when it is not there, run it now at
    ``profile``'s shape (`BenchConfig.for_profile`; TRL only at the rloo shape) and write it under ``output_dir``."""
    path = Path(directory) / BENCH_FILES[estimator]
    if path.exists():
        return read_json(path)
    logger.info("no benchmark at %s: running it at the %s profile", path, profile)
    methods = METHODS if estimator == "rloo" else ("plus", "plus_reference")
    result = run_bench(BenchConfig.for_profile(profile, estimator), methods)
    write_json(Path(output_dir) / BENCH_FILES[estimator], result)
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m plus.bench", description=__doc__.split("\n\n")[0])
    defaults = BenchConfig()
    parser.add_argument("--profile", default=defaults.profile, help="smoke | cpu | gpu (the models)")
    parser.add_argument("--estimator", default=defaults.estimator, help="rloo (notebook 04) | ppo (separate critic)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {METHODS}")
    parser.add_argument("--contexts", type=int, default=defaults.num_contexts, help="contexts per rollout batch")
    parser.add_argument("--samples", type=int, default=defaults.num_samples, help="summaries per context")
    parser.add_argument("--summary-tokens", type=int, default=defaults.max_summary_tokens, help="summary cap")
    parser.add_argument("--warmup", type=int, default=defaults.warmup_steps, help="untimed rollout batches")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="timed rollout batches")
    parser.add_argument("--output", default=None, help="JSON path (default results/<profile>/bench/, BENCH_FILES)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bench = BenchConfig(
        profile=args.profile,
        estimator=args.estimator,
        num_contexts=args.contexts,
        num_samples=args.samples,
        max_summary_tokens=args.summary_tokens,
        warmup_steps=args.warmup,
        steps=args.steps,
    )
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = run_bench(bench, methods)
    output = Path(args.output or f"results/{args.profile}/bench/{BENCH_FILES[args.estimator]}")
    write_json(output, result)
    for method, seconds in result["seconds_per_step"].items():
        logger.info(
            "%s: %.1f s per rollout batch, %.1f tokens/s", method, seconds, result["tokens_per_second"][method]
        )
    for name, ratio in result["ratios"].items():
        logger.info("%s = %.2f", name, ratio)
    logger.info("wrote %s", output)
    return result


if __name__ == "__main__":
    main()
