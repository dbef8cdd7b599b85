"""The summary-conditioned reward model r_phi(x, y | z) and its conditioning template.

A backbone (`plus.models.load_backbone`) reads one text built from a user summary z, a prompt x and a
response y; a linear head turns one pooled hidden state into a scalar reward.

The conditioning template (`build_reward_input`)
-------------------------------------------------
*Chat* template, for decoder backbones that have a chat template (SmolLM2, Qwen, ``tiny-chat-lm``)::

    [{"role": "user",      "content": SUMMARY_INTRO + "\\n" + z + "\\n\\n" + x},
     {"role": "assistant", "content": y}]

rendered with the tokenizer's own chat template, trailing whitespace stripped so that the last token is the
end-of-turn token. The summary comes first in the first user turn, introduced as a summary of the user's
preferences from earlier conversations (PLUS, section 2); with no summary (BTL) the user turn is the prompt.
The prompt is always the content of *one* message: a prompt that contains the words "User:" or "Assistant:"
is never split into extra turns (the public PLUS code splits on them).

*Plain* template, for encoders (the MiniLM default, ``tiny-encoder``): a BERT sentence pair
``[CLS] SUMMARY_INTRO \\n z \\n\\n PROMPT_INTRO x [SEP] y [SEP]``; segment ids mark the response.

Truncation never silently cuts the response. When the input is longer than ``max_length`` tokens, the
context side (the summary, or the raw context for ICL) is cut first, from its end; then the prompt, from its
start (the words nearest the response are kept); the response only if it alone does not fit, from its end,
and then a warning is logged. Every cut is returned in `RewardInput.truncated` and counted by the model
(`SummaryRewardModel.truncation_counts`).

Reading the reward (pooling)
----------------------------
Decoders: the hidden state of the last non-pad token, the only position that has attended to the whole
sequence (PLUS, TRL, OpenRLHF). Encoders: the mean of the hidden states over non-pad tokens. Every token of a
bidirectional encoder sees the whole input, so no position is privileged by attention; all-MiniLM-L6-v2 was
trained (contrastively, by sentence-transformers) on exactly this mean-pooled vector, while its [CLS] state
and the final [SEP] were never a training target, so the mean is the representation its weights are
already tuned to make informative.

Frozen bottom blocks, computed once (`FrozenFeatureCache`)
----------------------------------------------------------
With ``num_trainable_layers=k`` the embeddings and the bottom blocks are frozen: they give the same hidden
states for the same tokens in every epoch, for every seed and for every method that builds the same input (BTL
and DPL build identical ones). `SummaryRewardModel.use_frozen_cache` makes `encode` look those states up by the
input's token ids and run only the top k blocks; a miss runs the frozen part once, in a batch, and stores each
input's states. The frozen part then runs without dropout, as a fixed feature extractor (without the cache it
runs with the backbone's dropout in training mode): this is the one difference, and the cached and uncached
rewards are equal in eval mode (tested). Encoders of the BERT family only (``embeddings`` + ``encoder.layer``,
the cpu profile's MiniLM); the gpu profile trains its whole decoder, where nothing is frozen to cache.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.masking_utils import create_bidirectional_mask

from plus.models import is_decoder, load_backbone

logger = logging.getLogger(__name__)

SUMMARY_INTRO = "Here is a summary of this user's preferences from earlier conversations:"
PROMPT_INTRO = "Prompt:"
POOLINGS = ("auto", "last", "mean", "cls")
TEMPLATES = ("auto", "chat", "plain")
PARTS = ("context", "prompt", "response")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class RewardModelConfig:
    """A summary-conditioned reward model. Defaults are the PLUS main table's (Qwen2.5-0.5B-Instruct)."""

    backbone: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """Anything `plus.models.load_backbone` loads: offline name, tiny test model, hub id or local path."""
    max_length: int = 1024
    """Cap on input tokens; the context side is truncated first, the response never silently."""
    pooling: str = "auto"
    """``last`` (last non-pad token), ``mean`` (over non-pad tokens), ``cls`` (first token) or ``auto``:
    ``last`` for decoders, ``mean`` for encoders (see the module docstring)."""
    template: str = "auto"
    """``chat``, ``plain`` or ``auto``: chat for decoders whose tokenizer has a chat template, else plain.
    (`build_reward_input` alone cannot see the backbone: there ``auto`` follows the tokenizer only.)"""
    head_init_std: float | None = None
    """Std of the normal init of the scalar head's weight (bias 0). ``None``: 1 / sqrt(hidden + 1), so the
    initial rewards are O(1) whatever the width (TRL's reward-model convention)."""
    num_trainable_layers: int | None = None
    """Train only the top k transformer blocks (plus the head); ``None`` trains the whole backbone. Lower
    blocks and the embeddings are frozen: on a CPU this makes fine-tuning ~3x cheaper."""

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone.strip():
            raise ValueError(f"RewardModelConfig.backbone must be a non-empty string, got {self.backbone!r}")
        if not isinstance(self.max_length, int) or self.max_length < 8:
            raise ValueError(f"RewardModelConfig.max_length must be an int >= 8, got {self.max_length!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"RewardModelConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.template not in TEMPLATES:
            raise ValueError(f"RewardModelConfig.template must be one of {TEMPLATES}, got {self.template!r}")
        if self.head_init_std is not None and not self.head_init_std > 0:
            raise ValueError(f"RewardModelConfig.head_init_std must be positive or None, got {self.head_init_std!r}")
        if self.num_trainable_layers is not None and (
            not isinstance(self.num_trainable_layers, int) or self.num_trainable_layers < 0
        ):
            raise ValueError(
                f"RewardModelConfig.num_trainable_layers must be None or int >= 0, got {self.num_trainable_layers!r}"
            )


@dataclass(frozen=True)
class RewardInput:
    """One tokenized reward-model input."""

    input_ids: list[int]  # (T,)
    token_type_ids: list[int] | None  # (T,) segment ids for encoders (1 = response), None for chat
    truncated: frozenset[str] = field(default_factory=frozenset)
    """Which of ``context``, ``prompt``, ``response`` were cut to fit ``max_length``."""


def _uses_chat(tokenizer: PreTrainedTokenizerBase, template: str) -> bool:
    if template == "auto":
        return getattr(tokenizer, "chat_template", None) is not None
    return template == "chat"


def _user_text(summary: str | None, prompt: str) -> str:
    return f"{SUMMARY_INTRO}\n{summary}\n\n{prompt}" if summary else prompt


def _encode(
    summary: str | None, prompt: str, response: str, tokenizer: PreTrainedTokenizerBase, chat: bool
) -> tuple[list[int], list[int] | None]:
    if chat:
        messages = [
            {"role": "user", "content": _user_text(summary, prompt)},
            {"role": "assistant", "content": response},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False).rstrip()
        return tokenizer(text, add_special_tokens=False)["input_ids"], None
    first = f"{SUMMARY_INTRO}\n{summary}\n\n{PROMPT_INTRO} {prompt}" if summary else f"{PROMPT_INTRO} {prompt}"
    encoded = tokenizer(first, response, add_special_tokens=True, return_token_type_ids=True)
    return encoded["input_ids"], encoded.get("token_type_ids")


def _cut(text: str, num_tokens: int, tokenizer: PreTrainedTokenizerBase, keep: str) -> str:
    """``text`` shortened by ``num_tokens`` tokens, keeping its ``start`` or its ``end``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep_n = max(len(ids) - num_tokens, 0)
    kept = ids[:keep_n] if keep == "start" else ids[len(ids) - keep_n :]
    return tokenizer.decode(kept, skip_special_tokens=True).strip()


def build_reward_input(
    summary: str | None,
    prompt: str,
    response: str,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    template: str = "auto",
) -> RewardInput:
    """Tokenize (z, x, y) with the conditioning template (module docstring), at most ``max_length`` tokens.

    ``summary`` is any text about the user (a summary, the raw context for ICL, the true description for the
    Oracle) or ``None``/"" for none (BTL). The context is cut first, then the prompt, the response last."""
    chat = _uses_chat(tokenizer, template)
    truncated: set[str] = set()
    parts = {"context": summary or "", "prompt": prompt, "response": response}
    keep = {"context": "start", "prompt": "end", "response": "start"}
    ids, types = _encode(parts["context"] or None, parts["prompt"], parts["response"], tokenizer, chat)
    for part in PARTS:
        # Re-tokenizing a decoded cut can shift the count by a token or two: cut again until it fits.
        for _ in range(4):
            overflow = len(ids) - max_length
            if overflow <= 0 or not parts[part]:
                break
            parts[part] = _cut(parts[part], overflow, tokenizer, keep[part])
            truncated.add(part)
            ids, types = _encode(parts["context"] or None, parts["prompt"], parts["response"], tokenizer, chat)
        if len(ids) <= max_length:
            break
    if len(ids) > max_length:  # the template alone is longer than max_length
        raise ValueError(f"max_length={max_length} is shorter than the reward template itself ({len(ids)} tokens)")
    return RewardInput(ids, types, frozenset(truncated))


def _blocks(backbone: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a decoder (``layers``) or a BERT encoder (``encoder.layer``)."""
    if hasattr(backbone, "layers"):
        return backbone.layers
    if hasattr(backbone, "encoder") and hasattr(backbone.encoder, "layer"):
        return backbone.encoder.layer
    raise ValueError(f"Cannot find the transformer blocks of {type(backbone).__name__} to freeze")


@contextmanager
def _eval_mode(modules: list[nn.Module]):
    """Run ``modules`` with dropout off, then restore each one's train/eval mode."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class FrozenFeatureCache:
    """Hidden states at the input of the first trainable block, one (T_i, H) tensor per distinct input (its
    token ids and segment ids), for every reward model on one backbone with one frozen depth (module
    docstring). Share one cache across seeds and methods; drop it to free the memory."""

    def __init__(self) -> None:
        self.owner: tuple[str, int] | None = None
        """(backbone, number of frozen blocks) of the models that use it: set by the first."""
        self.states: dict[tuple[tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.states)


class SummaryRewardModel(nn.Module):
    """r_phi(x, y | z): a backbone plus a scalar head read at one pooled position (module docstring)."""

    def __init__(
        self, config: RewardModelConfig, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.config = config
        # Loaders may reseed the global RNG (the tiny test models do): isolate them, so the head's init (and all
        # that follows) depends on the caller's seed.
        rng_state = torch.get_rng_state()
        self.backbone, self.tokenizer = load_backbone(config.backbone, device=device, dtype=dtype)
        torch.set_rng_state(rng_state)
        self.decoder = is_decoder(self.backbone)
        self.pooling = config.pooling if config.pooling != "auto" else ("last" if self.decoder else "mean")
        self.chat = config.template == "chat" or (
            config.template == "auto" and self.decoder and _uses_chat(self.tokenizer, "auto")
        )
        width = self.backbone.config.hidden_size
        param = next(self.backbone.parameters())
        self.head = nn.Linear(width, 1, device=param.device, dtype=param.dtype)
        std = config.head_init_std if config.head_init_std is not None else 1.0 / (width + 1) ** 0.5
        nn.init.normal_(self.head.weight, std=std)
        nn.init.zeros_(self.head.bias)
        if config.num_trainable_layers is not None:
            blocks = _blocks(self.backbone)
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            for block in list(blocks)[len(blocks) - config.num_trainable_layers :]:
                for p in block.parameters():
                    p.requires_grad_(True)
        self.truncation_counts: Counter[str] = Counter()
        """``inputs`` scored so far and how many had their ``context``/``prompt``/``response`` cut."""
        self.frozen_cache: FrozenFeatureCache | None = None
        """Set by `use_frozen_cache`."""

    def frozen_cache_refusal(self) -> str | None:
        """Why `use_frozen_cache` would refuse this model, or None when it can use a cache."""
        blocks, trainable = _blocks(self.backbone), self.config.num_trainable_layers
        if self.decoder or not hasattr(self.backbone, "embeddings"):
            return f"supports BERT-family encoders, not {type(self.backbone).__name__}"
        if trainable is None or trainable >= len(blocks):
            return f"needs frozen blocks: num_trainable_layers={trainable} of {len(blocks)} blocks"
        return None

    def use_frozen_cache(self, cache: FrozenFeatureCache) -> None:
        """Look up the frozen bottom's hidden states in ``cache`` from now on (module docstring). Raises
        ValueError when nothing is frozen, the backbone is not a BERT-family encoder, or the cache belongs to
        another backbone or depth."""
        reason = self.frozen_cache_refusal()
        if reason:
            raise ValueError(f"use_frozen_cache {reason}")
        blocks, trainable = _blocks(self.backbone), self.config.num_trainable_layers
        owner = (self.config.backbone, len(blocks) - trainable)
        if cache.owner is not None and cache.owner != owner:
            raise ValueError(f"This FrozenFeatureCache holds states of {cache.owner}, not of {owner}")
        cache.owner = owner
        self.frozen_cache = cache

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def tokenize(self, summaries: list[str | None], prompts: list[str], responses: list[str]) -> dict:
        """A right-padded batch: ``input_ids`` and ``attention_mask`` (B, T), plus ``token_type_ids`` for
        encoders. Updates `truncation_counts`."""
        if not len(summaries) == len(prompts) == len(responses):
            raise ValueError(
                f"score needs as many summaries, prompts and responses, got {len(summaries)}, {len(prompts)}, "
                f"{len(responses)}"
            )
        inputs = [
            build_reward_input(s, p, r, self.tokenizer, self.config.max_length, "chat" if self.chat else "plain")
            for s, p, r in zip(summaries, prompts, responses, strict=True)
        ]
        self.truncation_counts["inputs"] += len(inputs)
        already_cut = self.truncation_counts["response"]
        for item in inputs:
            self.truncation_counts.update(item.truncated)
        if self.truncation_counts["response"] and not already_cut:
            logger.warning(
                "A response was truncated to fit max_length=%d (raise it); further cuts are only counted in "
                "truncation_counts['response']",
                self.config.max_length,
            )
        length = max(len(item.input_ids) for item in inputs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(inputs), length), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(inputs), length), dtype=torch.long)  # (B, T)
        types = torch.zeros((len(inputs), length), dtype=torch.long)  # (B, T)
        for i, item in enumerate(inputs):
            ids[i, : len(item.input_ids)] = torch.tensor(item.input_ids)
            mask[i, : len(item.input_ids)] = 1
            if item.token_type_ids is not None:
                types[i, : len(item.input_ids)] = torch.tensor(item.token_type_ids)
        batch = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if not self.decoder:
            batch["token_type_ids"] = types.to(self.device)
        return batch

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) hidden states and (B, T) mask -> (B, H) by `pooling`."""
        if self.pooling == "last":
            last = mask.sum(dim=1) - 1  # (B,) right padding: the last non-pad position
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def encode(self, summaries: list[str | None], prompts: list[str], responses: list[str]) -> torch.Tensor:
        """The pooled features (B, H) that the head reads; differentiable."""
        batch = self.tokenize(summaries, prompts, responses)
        if self.frozen_cache is None:
            hidden = self.backbone(**batch).last_hidden_state  # (B, T, H)
        else:
            hidden = self._encode_cached(batch)
        return self.pool(hidden, batch["attention_mask"])

    def _mask(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        return create_bidirectional_mask(config=self.backbone.config, inputs_embeds=embeddings, attention_mask=mask)

    def _encode_cached(self, batch: dict) -> torch.Tensor:
        """The last hidden states (B, T, H): the frozen bottom's from the cache (misses run once, in a batch),
        then the trainable top blocks."""
        cache, blocks = self.frozen_cache, _blocks(self.backbone)
        frozen = cache.owner[1]
        ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        keys = [(tuple(ids[i, :n].tolist()), tuple(types[i, :n].tolist())) for i, n in enumerate(lengths)]
        missing = [i for i, key in enumerate(keys) if key not in cache.states]
        cache.hits += len(keys) - len(missing)
        cache.misses += len(missing)
        if missing:
            rows = torch.tensor(missing, device=ids.device)
            with torch.no_grad(), _eval_mode([self.backbone.embeddings, *blocks[:frozen]]):
                hidden = self.backbone.embeddings(input_ids=ids[rows], token_type_ids=types[rows])  # (M, T, H)
                attention = self._mask(hidden, mask[rows])
                for block in blocks[:frozen]:
                    hidden = block(hidden, attention)
            for row, i in enumerate(missing):
                cache.states[keys[i]] = hidden[row, : lengths[i]].clone()
        hidden = torch.zeros(*ids.shape, self.hidden_size, device=ids.device, dtype=self.head.weight.dtype)
        for i, key in enumerate(keys):
            hidden[i, : lengths[i]] = cache.states[key]
        attention = self._mask(hidden, mask)
        for block in blocks[frozen:]:
            hidden = block(hidden, attention)
        return hidden  # (B, T, H)

    def score(self, summaries: list[str | None], prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Rewards r(x, y | z), (B,) in float32; differentiable. ``None``/"" summaries mean no conditioning."""
        return self.head(self.encode(summaries, prompts, responses)).squeeze(-1).float()  # (B,)

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (backbone + head) into ``directory``."""
        return save_module(self, self.config, directory)

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str | None = None) -> SummaryRewardModel:
        """The model `save` wrote: same config, same weights, same scores."""
        config = RewardModelConfig(**read_config(directory)["config"])
        model = cls(config, device=device)
        load_weights(model, directory)
        return model


def save_module(module: nn.Module, config: object, directory: str | Path, extra: dict | None = None) -> Path:
    """``directory/config.json`` (the dataclass config, its class name and ``extra``) and
    ``directory/model.safetensors`` (the state dict, tensors made contiguous; no pickles)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    payload = {"class": type(module).__name__, "config": asdict(config), **(extra or {})}  # type: ignore[call-overload]
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return directory


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint config at {path}")
    return json.loads(path.read_text())


def load_weights(module: nn.Module, directory: str | Path) -> None:
    """Load ``directory/model.safetensors`` into ``module`` (strict: every tensor must match)."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint weights at {path}")
    state = load_file(str(path), device=str(next(module.parameters()).device))
    module.load_state_dict(state, strict=True)
