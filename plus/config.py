"""Run profiles and component configs: frozen dataclasses whose defaults are the papers' values.

A *profile* fixes the models and the scale of a run in one place, so that every notebook takes a single
``profile`` parameter (plus its own knobs) and the same code runs in seconds on toy models, on a laptop
CPU with the offline default models, or at paper scale on GPUs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Profile:
    """Models and scale of a run. Model names are anything `plus.models` loads: an offline name, a hub id
    or a local path."""

    name: str
    """Profile name: ``smoke``, ``cpu`` or ``gpu``."""
    summarizer_model: str
    """Causal chat LM that writes user summaries (PLUS: Qwen2.5-3B-Instruct)."""
    reward_model: str
    """Backbone of the reward models (PLUS main table: Qwen2.5-0.5B-Instruct)."""
    embedding_model: str
    """Frozen sentence encoder that gives VPL and PAL their pair embeddings."""
    num_train_examples: int
    """Training examples per data set (per user population)."""
    num_test_examples: int
    """Held-out examples per split."""
    max_summary_tokens: int
    """Cap on generated summary tokens (the paper: 256)."""
    max_length: int
    """Cap on reward-model input tokens; the context side is truncated first."""
    batch_size: int
    """Examples per optimisation step."""
    num_seeds: int
    """Seeds a result is averaged over (the paper: 3)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Profile.{f.name} must be a positive int, got {value!r}")
            if f.type == "str" and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"Profile.{f.name} must be a non-empty string, got {value!r}")


PROFILES: dict[str, Profile] = {
    # Tiny random models built from a config and a byte-level tokenizer: seconds, for tests and CI.
    "smoke": Profile(
        name="smoke",
        summarizer_model="tiny-chat-lm",
        reward_model="tiny-chat-lm",
        embedding_model="tiny-encoder",
        num_train_examples=32,
        num_test_examples=16,
        max_summary_tokens=16,
        max_length=512,
        batch_size=8,
        num_seeds=2,
    ),
    # The models PyPI packages ship (no network): the book's default, sized for a 2-core laptop.
    "cpu": Profile(
        name="cpu",
        summarizer_model="smollm2-135m-instruct",
        reward_model="all-minilm-l6-v2",
        embedding_model="all-minilm-l6-v2",
        num_train_examples=1024,
        num_test_examples=200,
        max_summary_tokens=64,
        max_length=256,
        batch_size=16,
        num_seeds=3,
    ),
    # Paper scale (PLUS main table): hub ids or local copies of them, CUDA with bf16.
    "gpu": Profile(
        name="gpu",
        summarizer_model="Qwen/Qwen2.5-3B-Instruct",
        reward_model="Qwen/Qwen2.5-0.5B-Instruct",
        embedding_model="sentence-transformers/all-MiniLM-L6-v2",
        num_train_examples=4000,
        num_test_examples=400,
        max_summary_tokens=256,
        max_length=1024,
        batch_size=128,
        num_seeds=3,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an unknown name is an error that lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def config_hash(config: object, length: int = 10) -> str:
    """A short stable hash of a dataclass config; it names the config's run directory."""
    payload = json.dumps(asdict(config), sort_keys=True, default=str)  # type: ignore[call-overload]
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def check_number(
    config: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    integer: bool = False,
) -> None:
    """Raise a ValueError naming ``Class.name`` unless the field is a finite number (an int if ``integer``;
    never a bool or a string) with ``low <= value <= high`` (``low < value`` if ``above``). NaN and inf fail
    every bound, so they fail here instead of training to NaN weights."""
    value = getattr(config, name)
    where = f"{type(config).__name__}.{name}"
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite {'int' if integer else 'number'}, got {value!r}")
    if low is not None and (value <= low if above else value < low):
        raise ValueError(f"{where} must be {'>' if above else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{where} must be <= {high}, got {value!r}")
