"""The co-adaptation loop's settings: `CoadaptConfig` (the paper's defaults) and `coadapt_config` (a profile's)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from plus.coadapt.estimators import ESTIMATORS
from plus.config import check_number
from plus.reward_model import RewardModelConfig


@dataclass(frozen=True)
class CoadaptConfig:
    """Hyper-parameters of the co-adaptation loop. Defaults are the paper's (REFERENCE.md 2.1)."""

    summarizer_model: str = "Qwen/Qwen2.5-3B-Instruct"
    """Causal chat LM that writes the summaries (anything `plus.models.load_causal_lm` loads)."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """The summary-conditioned reward model (backbone, max length, pooling)."""
    seed: int = 0
    """Seeds python, numpy and torch (each process adds its rank)."""
    num_episodes: int = 1
    """Passes over the training records (the paper: 1)."""
    max_steps: int | None = None
    """Stop after this many rollout batches (None: all episodes)."""
    rollout_batch_size: int = 256
    """Records per rollout batch, over all processes."""
    train_batch_size: int = 128
    """Records per optimizer step (a rollout batch gives rollout / train steps per PPO epoch)."""
    micro_batch_size: int = 8
    """Rows (summaries) per forward pass (scoring, log-probs and gradient accumulation); sets the memory use only:
    losses and gradients do not depend on it."""
    generation_batch_size: int = 64
    """Summaries decoded together (contexts x samples per context) on the shared-context path; larger batches
    amortise the per-step cost of decoding, at the price of KV-cache memory."""
    shared_context: bool = True
    """The fast path (`plus.prefix`): each context is prefilled once for its samples, the summarizer's frozen
    bottom blocks run once per rollout batch, and the log-prob, reference, critic and update passes run only the
    blocks above them, with logits at the summary positions. False: the plain reference path, kept for the
    equivalence tests and the benchmark (transformers' ``generate`` in micro-batches, and a full forward of
    [context, summary] for every row in every pass). Both compute the same numbers up to rounding."""
    max_summary_tokens: int = 256
    """Cap on generated summary tokens."""
    temperature: float = 1.0
    """Sampling temperature of the summaries."""
    top_p: float = 1.0
    """Nucleus-sampling threshold of the summaries."""
    prefill_marker: bool = False
    """Start the assistant turn with ``##Summary`` (help for small models; the paper does not)."""
    summary_prefix: str = ""
    """The summary's first words, written after the marker (needs ``prefill_marker``), e.g. "This user prefers".
    The summary the reward model reads is the prefix and what the summarizer writes after it; the policy is
    trained only on the tokens it wrote. "" (the paper): the summarizer writes the whole summary."""
    estimator: str = "ppo"
    """``ppo`` (learned critic, GAE), ``rloo`` or ``grpo`` (critic-free, ``num_samples`` per context)."""
    num_samples: int = 4
    """Summaries per context for ``rloo`` / ``grpo`` (ignored by ``ppo``, which samples one)."""
    kl_coef: float = 0.01
    """beta of the per-token KL penalty to the frozen reference summarizer (k1 estimator, fixed)."""
    reward_clip: float = 10.0
    """The summarizer's reward R is clipped to [-reward_clip, reward_clip]."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """Whiten the advantages over the (per-process) rollout."""
    policy_clip: float = 0.2
    """PPO ratio clip."""
    value_clip: float = 0.2
    """PPO value clip (around the rollout's values)."""
    ppo_epochs: int = 1
    """Passes of PPO over each rollout batch."""
    reward_epochs: int = 1
    """Passes of the reward model's BT update over each rollout batch's summaries (the paper: 1). More passes let
    a short run give the reward model enough updates; the summarizer's reward still comes from the model before
    the batch's first pass."""
    actor_lr: float = 5e-7
    """Summarizer learning rate."""
    critic_lr: float = 9e-6
    """Critic learning rate."""
    reward_lr: float = 9e-6
    """Reward-model learning rate."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (all three optimizers)."""
    weight_decay: float = 0.0
    """AdamW weight decay (all three optimizers)."""
    warmup_ratio: float = 0.03
    """Share of the optimizer steps with a linear warmup before the cosine decay (`plus.schedules`)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip, per model."""
    separate_critic: bool = True
    """Critic = a copy of the summarizer + value head (True) or a value head on the policy's detached hidden
    states (False, cheaper)."""
    lora: bool = False
    """Train LoRA adapters (peft) on the summarizer (and on a separate critic) instead of every weight."""
    lora_rank: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha (the update is scaled by alpha / rank)."""
    lora_dropout: float = 0.0
    """LoRA dropout (0 keeps rollout and update log-probs equal)."""
    lora_top_layers: int | None = None
    """Put the adapters only on the top k transformer blocks (None: every block). The backward pass then stops
    at block L - k, which makes a summarizer update several times cheaper on a CPU."""
    train_summarizer: bool = True
    """False freezes the summarizer: PLUS-untrained (the reward model trains on its fixed summaries)."""
    train_reward_model: bool = True
    """False freezes the reward model: trained summarizer + static reward model."""
    summarizer_start: int = 0
    """Rollout batches before the summarizer's first update: until then the reward model trains alone on the
    initial summarizer's samples, as PLUS-untrained's does (0: both from the first batch, the paper's)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N rollout batches (0: only at the end)."""

    def __post_init__(self) -> None:
        positive = (
            "num_episodes",
            "rollout_batch_size",
            "train_batch_size",
            "micro_batch_size",
            "generation_batch_size",
            "max_summary_tokens",
            "ppo_epochs",
            "reward_epochs",
            "lora_rank",
            "lora_alpha",
        )
        for name in positive:
            check_number(self, name, 1, integer=True)
        check_number(self, "seed", 0, integer=True)
        if self.max_steps is not None:
            check_number(self, "max_steps", 1, integer=True)
        if self.lora_top_layers is not None:
            check_number(self, "lora_top_layers", 1, integer=True)
        check_number(self, "num_samples", 1, integer=True)
        check_number(self, "checkpoint_every", 0, integer=True)
        check_number(self, "summarizer_start", 0, integer=True)
        if self.rollout_batch_size % self.train_batch_size:
            raise ValueError(
                f"CoadaptConfig.rollout_batch_size ({self.rollout_batch_size}) must be a multiple of "
                f"train_batch_size ({self.train_batch_size})"
            )
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"CoadaptConfig.estimator must be one of {tuple(ESTIMATORS)}, got {self.estimator!r}")
        if self.estimator != "ppo" and self.num_samples < 2:
            raise ValueError(f"CoadaptConfig.num_samples must be >= 2 for {self.estimator}, got {self.num_samples}")
        for name in ("kl_coef", "reward_clip", "policy_clip", "value_clip", "max_grad_norm", "weight_decay"):
            check_number(self, name, 0)
        for name in ("actor_lr", "critic_lr", "reward_lr", "temperature"):
            check_number(self, name, 0, above=True)
        for name in ("gamma", "lam", "top_p", "warmup_ratio", "lora_dropout"):
            check_number(self, name, 0, 1)
        betas = self.adam_betas
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"CoadaptConfig.adam_betas must be a pair of numbers in [0, 1), got {betas!r}")
        for beta in betas:
            if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 1:
                raise ValueError(f"CoadaptConfig.adam_betas must be a pair of numbers in [0, 1), got {betas!r}")
        if not isinstance(self.summarizer_model, str) or not self.summarizer_model.strip():
            raise ValueError(f"CoadaptConfig.summarizer_model must name a model, got {self.summarizer_model!r}")
        if self.summary_prefix and not self.prefill_marker:
            raise ValueError(f"CoadaptConfig.summary_prefix={self.summary_prefix!r} needs prefill_marker=True")

    @property
    def samples_per_context(self) -> int:
        return 1 if self.estimator == "ppo" else self.num_samples

    @classmethod
    def from_dict(cls, payload: dict) -> CoadaptConfig:
        """The config `asdict` wrote (``reward_model`` as a dict, ``adam_betas`` as a list)."""
        payload = dict(payload)
        payload["reward_model"] = RewardModelConfig(**payload["reward_model"])
        payload["adam_betas"] = tuple(payload["adam_betas"])
        return cls(**payload)


def coadapt_config(profile_name: str, **changes: Any) -> CoadaptConfig:
    """The loop at a profile's scale (`plus.config.PROFILES`: models, summary cap, reward-model input cap), then
    ``changes``.

    - smoke: the tiny models, every block trained, one rollout batch of 8 contexts, lr 1e-3: checks that it runs;
    - cpu: sized for a 2-core laptop. SmolLM2-135M-Instruct with LoRA (rank 16) on its top 8 blocks at lr 1e-3;
      RLOO with 4 summaries per context (no critic to warm up in a run of a few hundred batches); temperature 0.7
      (SmolLM2-135M writes noise at 1.0); the assistant turn prefilled with the marker and "This user prefers
      responses about" (left to start on its own it rarely writes about the user); 24 summary tokens after it;
      8 contexts per rollout batch; the MiniLM reward model with its top 4 blocks trained at lr 1e-3 (the
      reward-model benchmark's setting, `plus.evaluation.benchmark_config`) and 4 passes per rollout batch;
    - gpu: the paper's (the `CoadaptConfig` defaults: PPO with a separate critic, full fine-tuning, actor lr
      5e-7, rollout 256 / train 128, temperature 1, no prefix) with the profile's models and summary cap."""
    from plus.config import get_profile

    profile = get_profile(profile_name)
    reward_model = RewardModelConfig(backbone=profile.reward_model, max_length=profile.max_length)
    config = CoadaptConfig(
        summarizer_model=profile.summarizer_model,
        reward_model=reward_model,
        max_summary_tokens=profile.max_summary_tokens,
    )
    if profile.name in ("smoke", "cpu"):
        cpu = profile.name == "cpu"
        config = replace(
            config,
            reward_model=replace(reward_model, num_trainable_layers=4 if cpu else None),
            rollout_batch_size=8,
            train_batch_size=8,
            max_steps=None if cpu else 1,
            max_summary_tokens=24 if cpu else profile.max_summary_tokens,
            estimator="rloo",
            num_samples=4,
            temperature=0.7,
            prefill_marker=True,
            summary_prefix="This user prefers responses about",
            lora=True,
            lora_top_layers=8 if cpu else None,
            separate_critic=False,
            actor_lr=1e-3,
            critic_lr=1e-3,
            reward_lr=1e-3,
            reward_epochs=4,
        )
    return replace(config, **changes)
