"""The personalized reward-model baselines behind one interface (REFERENCE.md section 4).

Every method is a `RewardMethod`: it scores a user's (prompt, response) given the user's record (its context,
its user id, its ground truth), and defines its own training loss on the record's train pair.

=================  =========================================================================================
``btl``            one Bradley-Terry reward model, no user information
``dpl``            distributional preference learning: mean and std heads, the DPL loss; reward = the mean
``icl``            the raw context text in the reward model's prompt, where PLUS puts the summary
``oracle``         the true user description (``ground_truth["description"]``) in the prompt
``plus-untrained`` summaries from the frozen offline summarizer, generated once and cached as JSONL
``vpl``            VAE over frozen embeddings of the context pairs, reward MLP on [embedding(x, y); z],
                   BT + annealed KL
``pal``            PAL-B: the user's ideal point is a softmax(w_u)-mix of K prompt-conditioned prototypes;
                   reward = learned scale * cosine(ideal point, response projection); a new user learns only
                   its mixture weights, from its own context pairs
=================  =========================================================================================

The text methods (btl, dpl, icl, oracle, plus-untrained) fine-tune a `SummaryRewardModel`; vpl and pal train
small networks on embeddings from a frozen sentence encoder (`TextEmbedder`), which is why they are cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from plus.config import check_number
from plus.losses import bradley_terry_loss, dpl_loss
from plus.models import load_backbone
from plus.reward_model import RewardModelConfig, SummaryRewardModel, load_weights, read_config, save_module
from plus.user_models import (
    PAL_NUM_PROTOTYPES,
    PalNetwork,
    VplNetwork,
    fit_mixture_logits,
    initial_user_logits,
    vpl_loss,
)

logger = logging.getLogger(__name__)

METHODS: dict[str, type[RewardMethod]] = {}
"""Every method by name (`register_method`): what `BaselineConfig.method`, `build_method` and the benchmark
accept."""
PAIRS: dict[str, tuple[str, str, str]] = {
    "train": ("train_prompt", "train_chosen", "train_rejected"),
    "eval": ("eval_prompt", "eval_chosen", "eval_rejected"),
    "reward": ("reward_prompt", "chosen", "rejected"),
}


@dataclass(frozen=True)
class BaselineConfig:
    """One baseline: its name, the reward-model backbone (text methods) and the small-network knobs
    (vpl, pal). Unused fields are ignored by the other methods."""

    method: str
    """A name in `METHODS`."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """The summary-conditioned reward model of the text methods (btl, dpl, icl, oracle, plus-untrained)."""
    embedding_model: str = "all-minilm-l6-v2"
    """Frozen sentence encoder whose mean-pooled, L2-normalised embeddings vpl and pal read."""
    embedding_max_length: int = 128
    """Token cap of one embedded text (prompt and response); cuts are counted in `TextEmbedder.truncation_counts`."""
    hidden_dim: int = 256
    """Width of the vpl/pal MLPs."""
    latent_dim: int = 32
    """vpl: size of the user latent z."""
    kl_weight: float = 1e-4
    """vpl: final weight of KL(q(z|context) || N(0, I)) (the VPL paper: 1e-4 Pets, 0 UF-P-2, 3e-6 UF-P-4)."""
    kl_anneal_fraction: float = 0.5
    """vpl: the KL weight rises linearly from 0 to `kl_weight` over this fraction of training."""
    num_prototypes: int = PAL_NUM_PROTOTYPES
    """pal: K, the number of prototype ideal points a user mixes."""
    adapt_steps: int = 100
    """pal: Adam steps that fit a new user's mixture weights (everything else frozen)."""
    adapt_learning_rate: float = 0.1
    """pal: learning rate of those steps."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"BaselineConfig.method must be one of {sorted(METHODS)}, got {self.method!r}")
        if not isinstance(self.embedding_model, str) or not self.embedding_model:
            model = self.embedding_model
            raise ValueError(f"BaselineConfig.embedding_model must be a non-empty string, got {model!r}")
        for name in ("embedding_max_length", "hidden_dim", "latent_dim", "num_prototypes"):
            check_number(self, name, 1, integer=True)
        check_number(self, "kl_weight", 0)
        check_number(self, "kl_anneal_fraction", 0, 1, above=True)
        check_number(self, "adapt_steps", 0, integer=True)
        check_number(self, "adapt_learning_rate", 0, above=True)

    @classmethod
    def from_dict(cls, payload: dict) -> BaselineConfig:
        return cls(**{**payload, "reward_model": RewardModelConfig(**payload["reward_model"])})


def _pair(records: Sequence[dict], pair: str) -> tuple[list[str], list[str], list[str]]:
    if pair not in PAIRS:
        raise ValueError(f"pair must be one of {sorted(PAIRS)}, got {pair!r}")
    names = PAIRS[pair]
    columns = []
    for name in names:
        column = []
        for i, record in enumerate(records):
            if name not in record:
                raise KeyError(f"record {i} (user {record.get('user_id')!r}) has no field {name!r}")
            column.append(record[name])
        columns.append(column)
    return columns[0], columns[1], columns[2]


class RewardMethod(nn.Module):
    """The interface every baseline implements: rewards for (record, prompt, response) triples."""

    name: ClassVar[str]
    """The key in `METHODS`, configs and ``table.json``."""
    label: ClassVar[str]
    """The name tables and figures show."""
    revision: ClassVar[int] = 0
    """Raised when the method's training changes, so that the benchmark does not read back runs of the earlier
    one (`plus.evaluation.run_fingerprint`)."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config

    def prepare(self, records: Sequence[dict]) -> None:
        """Called once with the training records before the optimiser is built (PAL registers its users)."""

    def adapt(self, records: Sequence[dict]) -> None:
        """Called before scoring held-out records (PAL fits new users' weights). Default: nothing to fit."""

    def rewards(self, records: Sequence[dict], prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(B,) rewards of ``responses`` to ``prompts`` for the users of ``records``."""
        raise NotImplementedError

    def pair_rewards(self, records: Sequence[dict], pair: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) rewards of the chosen and (B,) of the rejected response of each record's ``pair``
        (``train``, ``eval`` or ``reward``), scored in one batch of 2B."""
        prompts, chosen, rejected = _pair(records, pair)
        both = self.rewards(list(records) * 2, prompts * 2, chosen + rejected)  # (2B,)
        return both[: len(records)], both[len(records) :]

    def loss(self, records: Sequence[dict], progress: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss on the records' train pairs and its metrics; ``progress`` in [0, 1] is the
        fraction of training done (VPL anneals its KL weight with it). Default: the BT loss."""
        chosen, rejected = self.pair_rewards(records, "train")
        loss = bradley_terry_loss(chosen, rejected)
        return loss, {"losses/bt": loss.item(), "train/accuracy": (chosen > rejected).float().mean().item()}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: ``backbone`` (pretrained, small learning rate) and ``head`` (new)."""
        backbone = [p for name, p in self.named_parameters() if p.requires_grad and ".backbone." in f".{name}"]
        ids = {id(p) for p in backbone}
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return {"backbone": backbone, "head": head}

    def extra_state(self) -> dict:
        """JSON state a checkpoint needs besides the weights (PAL: its user index)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore `extra_state` before the weights are loaded."""


# --------------------------------------------------------------------------------------------------------------
# Text methods: a SummaryRewardModel conditioned on some text about the user.


def register_method(cls: type[RewardMethod]) -> type[RewardMethod]:
    """Class decorator: make ``cls`` buildable by its ``name`` (`METHODS`). A method whose constructor takes
    only the config (every `ConditionedRewardMethod`) needs nothing else to run in the benchmark."""
    if not getattr(cls, "name", None) or not getattr(cls, "label", None):
        raise ValueError(f"{cls.__name__} needs class attributes name and label to be registered")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({METHODS[cls.name].__name__})")
    METHODS[cls.name] = cls
    return cls


def method_label(name: str) -> str:
    """The label of the registered method ``name`` (e.g. "PLUS-untrained" for "plus-untrained")."""
    return METHODS[name].label


class ConditionedRewardMethod(RewardMethod):
    """A `SummaryRewardModel` whose summary slot holds `condition(record)`."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        self.model = SummaryRewardModel(config.reward_model)

    def condition(self, record: dict, index: int) -> str | None:
        """The text about the user that goes where PLUS puts the summary (None: no conditioning)."""
        raise NotImplementedError

    def rewards(self, records: Sequence[dict], prompts: list[str], responses: list[str]) -> torch.Tensor:
        conditions = [self.condition(record, i) for i, record in enumerate(records)]
        return self.model.score(conditions, prompts, responses)


@register_method
class BTL(ConditionedRewardMethod):
    """One Bradley-Terry reward model for everyone: no user information."""

    name = "btl"
    label = "BTL"

    def condition(self, record: dict, index: int) -> str | None:
        return None


@register_method
class ICL(ConditionedRewardMethod):
    """The raw context text (``record["context"]``) in the summary slot; truncated first when too long.

    In training, each record's context is redrawn at every visit from the training contexts of the same user
    (`prepare`) that do not show the record's own train pair (its chosen or rejected text): the reward model sees
    each target under many contexts of its user, so it must read the context rather than memorise (context,
    target) pairs. Held-out records are scored with their own context. The reward-model benchmark's page gives
    what this does at the cpu profile (its stored runs before revision 1 read each record's fixed context).

    Departures from the PLUS paper's ICL baseline (a reward model reading each example's fixed context):

    - each training record's context is redrawn at every visit among its user's training contexts that do not
      show the record's pair; held-out records keep their own. With 256 training records the fixed-context
      model memorises (context, target) pairs at the cpu profile
      (`results/cpu/probes/03_reward_models-data` measured the other lever, more records);
    - the context is the record's labelled pairs written as text ("Example k", "Preferred response:", "Rejected
      response:"), our format, not the paper's prompt, and it is cut from its end when the input exceeds the
      reward model's ``max_length`` (`plus.reward_model`).
    """

    name = "icl"
    label = "ICL"
    revision = 1
    """1: training contexts redrawn within the user (0: each record's own context)."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        self._contexts: dict[str, list[str]] = {}

    def prepare(self, records: Sequence[dict]) -> None:
        self._contexts = {}
        for record in records:
            self._contexts.setdefault(record["user_id"], []).append(record["context"])

    def _redrawn(self, record: dict) -> dict:
        """The record with a context drawn (torch's seeded RNG) among its user's training contexts that do not
        show its train pair; the record itself when there is no such context."""
        shown = (record["train_chosen"], record["train_rejected"])
        allowed = [c for c in self._contexts.get(record["user_id"], []) if not any(t in c for t in shown)]
        if not allowed:
            return record
        return {**record, "context": allowed[int(torch.randint(len(allowed), ()))]}

    def pair_rewards(self, records: Sequence[dict], pair: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and pair == "train":  # one drawn context per record, shared by its two responses
            records = [self._redrawn(record) for record in records]
        return super().pair_rewards(records, pair)

    def condition(self, record: dict, index: int) -> str | None:
        return record["context"]


@register_method
class Oracle(ConditionedRewardMethod):
    """The true user description (``ground_truth["description"]``) in the summary slot."""

    name = "oracle"
    label = "Oracle"

    def condition(self, record: dict, index: int) -> str | None:
        truth = record.get("ground_truth")
        if not truth or not truth.get("description"):
            raise ValueError(
                f"record {index} (user {record.get('user_id')!r}): Oracle needs ground_truth['description'], "
                "which only synthetic users have"
            )
        return truth["description"]


@register_method
class PlusUntrained(ConditionedRewardMethod):
    """Summaries of each record's context from the frozen summarizer (PLUS with the summarizer untrained).

    The summaries are looked up by context text in ``summaries`` (see `summarize_contexts`)."""

    name = "plus-untrained"
    label = "PLUS-untrained"

    def __init__(self, config: BaselineConfig, summaries: dict[str, str] | None = None) -> None:
        super().__init__(config)
        self.summaries = dict(summaries or {})

    def condition(self, record: dict, index: int) -> str | None:
        try:
            return self.summaries[record["context"]]
        except KeyError:
            raise KeyError(
                f"record {index} (user {record.get('user_id')!r}): no cached summary of its context; "
                "run plus.baselines.summarize_contexts on these records first"
            ) from None


@register_method
class DPL(ConditionedRewardMethod):
    """Distributional preference learning: the pooled features feed a mean head (the reward model's head)
    and a std head; trained with `plus.losses.dpl_loss`; the reward is the mean. No user information.

    Departures from the authors' code (``MeanAndVarianceRewardTrainer`` of ``WEIRDLabUW/vpl_llm``, whose loss
    ours matches to rounding otherwise):

    - the std is softplus(std head) + 1e-4, and `plus.losses.dpl_loss` floors the combined scale at 1e-6 (the
      authors: softplus alone): a floor keeps the loss finite when both stds collapse to 0;
    - the std head is its own Linear layer on the pooled features, its bias starting at softplus^-1(1) (unit
      std at the start); the authors read mean and std as the two outputs of one classification head;
    - no variance penalty (the authors' option; its default, 0, is the same).
    """

    name = "dpl"
    label = "DPL"

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        param = self.model.head.weight
        self.std_head = nn.Linear(self.model.hidden_size, 1, device=param.device, dtype=param.dtype)
        nn.init.normal_(self.std_head.weight, std=1.0 / (self.model.hidden_size + 1) ** 0.5)
        nn.init.constant_(self.std_head.bias, math.log(math.e - 1))  # softplus(bias) = 1: unit std at init

    def condition(self, record: dict, index: int) -> str | None:
        return None

    def mean_and_std(self, records: Sequence[dict], prompts: list[str], responses: list[str]):
        features = self.model.encode([None] * len(records), prompts, responses)  # (B, H)
        mean = self.model.head(features).squeeze(-1).float()  # (B,)
        std = F.softplus(self.std_head(features).squeeze(-1).float()) + 1e-4  # (B,)
        return mean, std

    def loss(self, records: Sequence[dict], progress: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        prompts, chosen, rejected = _pair(records, "train")
        mean, std = self.mean_and_std(list(records) * 2, prompts * 2, chosen + rejected)  # (2B,) each
        b = len(records)
        loss = dpl_loss(mean[:b], std[:b], mean[b:], std[b:])
        return loss, {
            "losses/dpl": loss.item(),
            "train/accuracy": (mean[:b] > mean[b:]).float().mean().item(),
            "train/mean_std": std.mean().item(),
        }


# --------------------------------------------------------------------------------------------------------------
# Embedding methods: small networks on a frozen sentence encoder.


class TextEmbedder:
    """Frozen sentence embeddings (mean-pooled, L2-normalised), computed once per distinct text and cached.

    A text longer than ``max_length`` tokens is cut to its first ``max_length`` (a long prompt can leave nothing
    of the response, so a chosen and a rejected response embed alike): the cuts are counted in
    `truncation_counts` and the first one is logged as a warning.

    Not an `nn.Module` on purpose: methods that hold one do not save or train its weights."""

    def __init__(
        self, model_name: str, max_length: int = 128, batch_size: int = 64, device: torch.device | str | None = None
    ) -> None:
        self.model_name = model_name
        self.max_length = max_length
        self.batch_size = batch_size
        self.model, self.tokenizer = load_backbone(model_name, device=device)
        self.model.eval()
        self.model.requires_grad_(False)
        self.cache: dict[str, torch.Tensor] = {}
        self.truncation_counts: Counter[str] = Counter()
        """``texts`` embedded so far (distinct ones: a cached text is not embedded again) and how many were
        ``truncated``."""

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, E) float32 embeddings on the CPU."""
        missing = sorted({t for t in texts if t not in self.cache})
        device = next(self.model.parameters()).device
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            self._count_truncations(chunk)
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(device)
            hidden = self.model(**batch).last_hidden_state  # (b, T, E)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, T, 1)
            pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1)  # (b, E)
            for text, vector in zip(chunk, pooled.float().cpu(), strict=True):
                self.cache[text] = vector
        return torch.stack([self.cache[t] for t in texts]) if texts else torch.zeros(0, self.dim)

    def _count_truncations(self, texts: list[str]) -> None:
        lengths = [len(ids) for ids in self.tokenizer(texts, verbose=False)["input_ids"]]
        already_cut = self.truncation_counts["truncated"]
        self.truncation_counts["texts"] += len(texts)
        self.truncation_counts["truncated"] += sum(length > self.max_length for length in lengths)
        if self.truncation_counts["truncated"] and not already_cut:
            logger.warning(
                "A text was truncated to the embedder's max_length=%d tokens (raise embedding_max_length; the "
                "encoder takes %s positions); further cuts are only counted in truncation_counts['truncated']",
                self.max_length,
                getattr(self.model.config, "max_position_embeddings", "?"),
            )


def pair_text(prompt: str, response: str) -> str:
    """The text embedded for a (prompt, response)."""
    return f"{prompt}\n{response}"


def _context_pairs(record: dict, index: int) -> list[dict]:
    pairs = record.get("context_pairs")
    if not pairs:
        raise ValueError(
            f"record {index} (user {record.get('user_id')!r}): field 'context_pairs' is missing or empty; VPL and "
            "PAL need a labelled context"
        )
    return pairs


class EmbeddingRewardMethod(RewardMethod):
    """Base of vpl and pal: holds a shared `TextEmbedder` (built from the config if not given)."""

    def __init__(self, config: BaselineConfig, embedder: TextEmbedder | None = None) -> None:
        super().__init__(config)
        self.embedder = embedder or TextEmbedder(config.embedding_model, config.embedding_max_length)

    def embed_pairs(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.embedder.embed([pair_text(p, r) for p, r in zip(prompts, responses, strict=True)]).to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def context_tensors(self, records: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embeddings of each record's context pairs, padded: chosen (B, N, E), rejected (B, N, E), mask (B, N)."""
        all_pairs = [_context_pairs(record, i) for i, record in enumerate(records)]
        n = max(len(pairs) for pairs in all_pairs)
        e = self.embedder.dim
        chosen = torch.zeros(len(records), n, e, device=self.device)
        rejected = torch.zeros(len(records), n, e, device=self.device)
        mask = torch.zeros(len(records), n, dtype=torch.bool, device=self.device)
        for i, pairs in enumerate(all_pairs):
            prompts = [p["prompt"] for p in pairs]
            chosen[i, : len(pairs)] = self.embed_pairs(prompts, [p["chosen"] for p in pairs])
            rejected[i, : len(pairs)] = self.embed_pairs(prompts, [p["rejected"] for p in pairs])
            mask[i, : len(pairs)] = True
        return chosen, rejected, mask


@register_method
class VPL(EmbeddingRewardMethod):
    """Variational preference learning (Poddar et al. 2024) on frozen embeddings: a `plus.user_models.VplNetwork`
    whose context is the record's ``context_pairs``. z ~ q(z | context) in training, z = mu at evaluation.
    Loss: `plus.user_models.vpl_loss`, BT + w(t) KL(q || N(0, I)), w rising linearly to `kl_weight`."""

    name = "vpl"
    label = "VPL"

    def __init__(self, config: BaselineConfig, embedder: TextEmbedder | None = None) -> None:
        super().__init__(config, embedder)
        self.network = VplNetwork(self.embedder.dim, config.hidden_dim, config.latent_dim)

    def posterior(self, records: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and log var of q(z | context), each (B, D)."""
        return self.network.encode(*self.context_tensors(records))

    def rewards(self, records: Sequence[dict], prompts: list[str], responses: list[str]) -> torch.Tensor:
        z = self.network.latent(*self.posterior(records))  # (B, D)
        return self.network.reward(self.embed_pairs(prompts, responses), z)

    def loss(self, records: Sequence[dict], progress: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        prompts, chosen, rejected = _pair(records, "train")
        mu, logvar = self.posterior(records)
        z = self.network.latent(mu, logvar)  # one z per record, shared by its chosen and rejected response
        r = self.network.reward(self.embed_pairs(prompts * 2, chosen + rejected), torch.cat([z, z]))  # (2B,)
        b = len(records)
        weight = self.config.kl_weight * min(1.0, progress / self.config.kl_anneal_fraction)
        loss, bt, kl = vpl_loss(r[:b], r[b:], mu, logvar, weight)
        return loss, {
            "losses/bt": bt.item(),
            "losses/kl": kl.item(),
            "train/kl_weight": weight,
            "train/accuracy": (r[:b] > r[b:]).float().mean().item(),
        }


@register_method
class PAL(EmbeddingRewardMethod):
    """PAL-B (Chen et al. 2024) on frozen embeddings: a `plus.user_models.PalNetwork` reading the prompt's
    embedding e(x) and the (prompt, response) embedding e(x, y), and one row of mixture logits w_u per training
    user. Training learns everything, including w_u. A user not seen in training gets w_u fitted on its record's
    context pairs (everything else frozen, `plus.user_models.fit_mixture_logits`) by `adapt`: PAL's few-shot
    protocol, one record's context at a time."""

    name = "pal"
    label = "PAL"

    def __init__(self, config: BaselineConfig, embedder: TextEmbedder | None = None) -> None:
        super().__init__(config, embedder)
        self.network = PalNetwork(self.embedder.dim, config.hidden_dim, config.num_prototypes)
        self.user_ids: list[str] = []
        self.user_weights = nn.Parameter(torch.zeros(0, config.num_prototypes))
        self.adapted: dict[tuple[str, str], torch.Tensor] = {}  # (user, context) -> fitted weights (K,) of a new user

    def prepare(self, records: Sequence[dict]) -> None:
        self.user_ids = sorted({record["user_id"] for record in records})
        # The generator keeps the global RNG intact.
        generator = torch.Generator().manual_seed(len(self.user_ids))
        init = initial_user_logits(len(self.user_ids), self.config.num_prototypes, generator)
        self.user_weights = nn.Parameter(init.to(self.device))

    def extra_state(self) -> dict:
        return {"user_ids": self.user_ids}

    def load_extra_state(self, state: dict) -> None:
        self.user_ids = list(state["user_ids"])
        self.user_weights = nn.Parameter(torch.zeros(len(self.user_ids), self.config.num_prototypes))

    def inputs(self, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's inputs: embeddings of (prompt, response) (B, E) and of the prompt alone (B, E)."""
        return self.embed_pairs(prompts, responses), self.embedder.embed(prompts).to(self.device)

    def score_with_weights(self, weights: torch.Tensor, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(B,) rewards for per-example mixture logits ``weights`` (B, K)."""
        return self.network.reward(weights, *self.inputs(prompts, responses))

    def weights_for(self, records: Sequence[dict]) -> torch.Tensor:
        """(B, K) mixture logits: a training user's learned row, or a new user's fitted weights."""
        index = {user: i for i, user in enumerate(self.user_ids)}
        rows = []
        for i, record in enumerate(records):
            if record["user_id"] in index:
                rows.append(self.user_weights[index[record["user_id"]]])
            elif (record["user_id"], record["context"]) in self.adapted:
                rows.append(self.adapted[(record["user_id"], record["context"])])
            else:
                raise KeyError(
                    f"record {i}: user {record['user_id']!r} was not in training and has no fitted weights; "
                    "call adapt() on the held-out records first"
                )
        return torch.stack(rows)

    def rewards(self, records: Sequence[dict], prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.score_with_weights(self.weights_for(records), prompts, responses)

    def adapt(self, records: Sequence[dict]) -> None:
        """Fit the mixture weights of every record whose user was not in training on that record's context
        pairs (all records at once: their losses are independent, so one batched optimisation fits each)."""
        known = set(self.user_ids)
        new = [record for record in records if record["user_id"] not in known]
        if not new:
            return
        contexts = [_context_pairs(record, i) for i, record in enumerate(new)]
        owner = torch.tensor([i for i, pairs in enumerate(contexts) for _ in pairs], device=self.device)
        prompts = [p["prompt"] for pairs in contexts for p in pairs]
        chosen = self.inputs(prompts, [p["chosen"] for pairs in contexts for p in pairs])
        rejected = self.inputs(prompts, [p["rejected"] for pairs in contexts for p in pairs])
        weights = fit_mixture_logits(
            self.network, chosen, rejected, owner, len(new), self.config.adapt_steps, self.config.adapt_learning_rate
        )
        for record, row in zip(new, weights, strict=True):
            self.adapted[(record["user_id"], record["context"])] = row


# --------------------------------------------------------------------------------------------------------------
# Building, saving and loading methods.

METHOD_NAMES: tuple[str, ...] = ("btl", "dpl", "icl", "vpl", "pal", "oracle", "plus-untrained")
"""The built-in methods, in the order of the paper's table (`METHODS` may hold more)."""


def build_method(
    config: BaselineConfig,
    embedder: TextEmbedder | None = None,
    summaries: dict[str, str] | None = None,
    seed: int = 0,
) -> RewardMethod:
    """The method ``config.method``; vpl/pal share ``embedder`` if given, plus-untrained reads ``summaries``.

    New weights (reward heads, the vpl/pal networks) are drawn from torch's RNG seeded with ``seed``, inside a
    fork of it: the same build in any process, and the caller's RNG stream left as it was. (torch seeds its
    RNG at random in each new process, so an unseeded build differs from run to run.)"""
    with torch.random.fork_rng():  # CUDA generators too, since manual_seed seeds them as well
        torch.manual_seed(seed)
        return _build_method(config, embedder, summaries)


def _build_method(
    config: BaselineConfig, embedder: TextEmbedder | None, summaries: dict[str, str] | None
) -> RewardMethod:
    cls = METHODS[config.method]
    if issubclass(cls, EmbeddingRewardMethod):
        if embedder is not None and embedder.model_name != config.embedding_model:
            raise ValueError(f"embedder is {embedder.model_name!r} but the config asks for {config.embedding_model!r}")
        return cls(config, embedder)
    if cls is PlusUntrained:
        return cls(config, summaries)
    return cls(config)


def save_method(method: RewardMethod, directory: str | Path) -> Path:
    """A checkpoint: ``config.json`` (config + extra state) and ``model.safetensors``. plus-untrained also
    writes its summaries as ``summaries.jsonl``. Atomic, with a manifest (`plus.persistence`): the files go to
    ``<directory>.incoming``, which then replaces ``directory``; an earlier checkpoint there stays until then."""
    from plus.persistence import incoming_dir, swap_in, write_manifest

    directory = Path(directory)
    incoming = save_module(method, method.config, incoming_dir(directory), extra={"extra_state": method.extra_state()})
    if isinstance(method, PlusUntrained):
        with (incoming / "summaries.jsonl").open("w") as handle:
            for context, summary in sorted(method.summaries.items()):
                handle.write(json.dumps({"context": context, "summary": summary}) + "\n")
    write_manifest(incoming)
    swap_in(incoming, directory)
    return directory


def load_method(directory: str | Path, embedder: TextEmbedder | None = None) -> RewardMethod:
    """The method `save_method` wrote, with identical weights (and hence identical scores). A checkpoint whose
    files do not match its manifest (truncated, changed) is refused, naming the file."""
    from plus.persistence import MANIFEST, manifest_problem

    directory = Path(directory)
    if (directory / MANIFEST).exists() and (problem := manifest_problem(directory)) is not None:
        raise ValueError(f"Cannot load the checkpoint in {directory}: {problem}")
    payload = read_config(directory)
    config = BaselineConfig.from_dict(payload["config"])
    summaries = None
    if config.method == "plus-untrained":
        lines = (directory / "summaries.jsonl").read_text().splitlines()
        summaries = {row["context"]: row["summary"] for row in map(json.loads, lines) if row}
    method = build_method(config, embedder=embedder, summaries=summaries)
    method.load_extra_state(payload.get("extra_state", {}))
    load_weights(method, directory)
    return method


# --------------------------------------------------------------------------------------------------------------
# PLUS-untrained: summaries from a frozen summarizer, generated once and cached as JSONL.


def summary_key(model_name: str, instruction: str, context: str) -> str:
    """The cache key of one summary: sha256 of (summarizer, instruction, context)."""
    return hashlib.sha256(json.dumps([model_name, instruction, context]).encode()).hexdigest()


def summarize_contexts(
    contexts: Sequence[str],
    summarize: Callable[[list[str]], list[str]],
    cache_path: str | Path,
    model_name: str,
    instruction: str,
    batch_size: int = 16,
) -> dict[str, str]:
    """Summaries of the distinct ``contexts``, {context: summary}, generated by ``summarize`` only for the
    contexts the JSONL cache at ``cache_path`` does not hold yet (appended as they are made, so an
    interrupted run keeps its work). Keyed by `summary_key`: a new model or instruction regenerates."""
    path = Path(cache_path)
    cached: dict[str, str] = {}
    if path.exists():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                    cached[row["key"]] = row["summary"]
                except (json.JSONDecodeError, KeyError) as error:
                    raise ValueError(f"{path}:{number} is not a summary cache row: {error}") from error
    distinct = list(dict.fromkeys(contexts))
    keys = {context: summary_key(model_name, instruction, context) for context in distinct}
    missing = [context for context in distinct if keys[context] not in cached]
    if missing:
        logger.info(
            "Summarizing %d of %d contexts (%d cached)", len(missing), len(distinct), len(distinct) - len(missing)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        summaries = summarize(chunk)
        if len(summaries) != len(chunk):
            raise ValueError(f"summarize returned {len(summaries)} summaries for {len(chunk)} contexts")
        with path.open("a") as handle:
            for context, summary in zip(chunk, summaries, strict=True):
                cached[keys[context]] = summary
                handle.write(json.dumps({"key": keys[context], "model": model_name, "summary": summary}) + "\n")
        logger.info("Summarized %d/%d contexts", min(start + batch_size, len(missing)), len(missing))
    return {context: cached[keys[context]] for context in distinct}


def frozen_summarizer(
    model_name: str, max_new_tokens: int, seed: int = 0, batch_size: int = 8, prefill_marker: bool = True
) -> Callable[[list[str]], list[str]]:
    """``summarize(contexts) -> summaries`` with the frozen offline summarizer (`plus.summarizer`), sampled at
    temperature 1 from a fixed seed. ``prefill_marker`` starts the answer with the marker (small models ignore
    the instruction otherwise). Loaded lazily: nothing is loaded when the cache already holds everything."""
    state: dict = {}

    def summarize(contexts: list[str]) -> list[str]:
        from plus.models import load_causal_lm
        from plus.summarizer import generate_summaries

        if "model" not in state:
            state["model"], state["tokenizer"] = load_causal_lm(model_name)
            state["generator"] = torch.Generator().manual_seed(seed)
        # generate_summaries samples from the global RNG: seed it from our own stream, restore it afterwards.
        outer = torch.get_rng_state()
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=state["generator"])))
        try:
            out = generate_summaries(
                state["model"],
                state["tokenizer"],
                contexts,
                max_new_tokens,
                batch_size=batch_size,
                prefill_marker=prefill_marker,
            )
        finally:
            torch.set_rng_state(outer)
        # An empty parse (nothing after the marker) still conditions the RM on *something*: the raw text.
        return [s.text or s.raw.strip() or "(no summary)" for s in out.summaries]

    return summarize


def plus_untrained_summaries(
    records: Sequence[dict],
    model_name: str,
    max_new_tokens: int,
    cache_path: str | Path,
    seed: int = 0,
    batch_size: int = 8,
    prefill_marker: bool = True,
) -> dict[str, str]:
    """{context: summary} for every distinct context of ``records``, from the frozen summarizer ``model_name``
    (`frozen_summarizer`), through the JSONL cache at ``cache_path`` (`summarize_contexts`)."""
    from plus.summarizer import SUMMARIZER_INSTRUCTION

    instruction = SUMMARIZER_INSTRUCTION + (f" [prefill marker, {max_new_tokens} tokens]" if prefill_marker else "")
    summarize = frozen_summarizer(model_name, max_new_tokens, seed, batch_size, prefill_marker)
    contexts = [record["context"] for record in records]
    return summarize_contexts(contexts, summarize, cache_path, model_name, instruction, batch_size)
