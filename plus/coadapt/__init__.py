"""PLUS co-adaptation: the summarizer (PPO) and the summary-conditioned reward model (Bradley-Terry) trained
together, one rollout batch at a time (REFERENCE.md section 2.1).

The algorithm as implemented (`train_plus`), for each rollout batch of B records:

1. **Sample** one summary z ~ pi_theta(. | context) per record (K per record for RLOO/GRPO), temperature and
   top_p from the config, at most ``max_summary_tokens`` tokens; the summary is the text after the last
   ``##Summary`` marker (`plus.summarizer.parse_summary`). Empty, marker-less and cut-off summaries are scored
   like any other (an empty one is simply an empty summary) and counted in the metrics.
2. **Score** with the reward model as it is BEFORE this batch's update, in eval mode and without gradients:
   R = clip(log sigmoid(r(chosen | z) - r(rejected | z)), -reward_clip, reward_clip) on the summarizer pair
   (``reward_prompt``, ``chosen``, ``rejected``).
3. **Update the summarizer** (skipped when ``train_summarizer`` is False, i.e. PLUS-untrained):
   PPO (default) - token rewards -kl_coef (log pi - log pi_ref) on every summary token (k1), plus R on the
   last one; a critic gives V per token; GAE (gamma, lam); advantages whitened over the rollout; clipped policy
   loss and clipped value loss; ``ppo_epochs`` passes over minibatches of ``train_batch_size``. RLOO/GRPO -
   K summaries per context, sequence reward R - kl_coef sum_t KL_t, leave-one-out (RLOO) or group-standardised
   (GRPO) advantages broadcast to every token, the same clipped surrogate, no critic.
4. **Update the reward model** with the BT loss on the SAME summaries, on the RM update pair (``train_prompt``,
   ``train_chosen``, ``train_rejected``), minibatches of ``train_batch_size`` (skipped when
   ``train_reward_model`` is False: trained summarizer + static reward model).

Departures from the paper and the authors' code (whose PPO entry point never calls the loop):

- The critic reads the summarizer's own tokens: with ``separate_critic`` (the default, as in OpenRLHF) it is a
  second copy of the summarizer with a scalar value head; without, a value head on the policy's last hidden
  states, detached so the value loss never moves the policy (a cheaper critic for CPU runs).
- Under data parallelism each process samples, scores and whitens its own share of the rollout batch (the
  advantage whitening is per process, not over the global batch); gradients are averaged as usual.
- The policy and critic run with dropout off during PPO (so the rollout and update log-probs agree); the reward
  model trains in train mode and scores in eval mode.
- With LoRA, the reference summarizer is the same network with its adapters switched off (no second copy).
- The PPO policy and value losses are token means per summary, then means over summaries (OpenRLHF v0.6's
  normalisation), so ``micro_batch_size`` sets the memory use only.

How it is computed (``shared_context``, the default; `plus.prefix`): each context is prefilled once and its KV
cache repeated for its K samples, all summaries of a rollout batch are decoded together, and the inputs of the first
trainable block are kept at every context and summary token. The log-prob, reference, critic and update passes then
run only the blocks above the frozen bottom ones (LoRA on the top k blocks: the top k), once per context for the
context part, with logits at the summary positions only. ``shared_context=False`` is the plain reference path (a full
forward of [context, summary] for every row in every pass), kept for the equivalence tests and `plus.bench`.

The package, in the order the loop reads: `plus.coadapt.config` (`CoadaptConfig`, `coadapt_config`),
`plus.coadapt.loop` (the rollout batch, the four stages, `train_plus`), `plus.coadapt.estimators` (one function per
advantage estimator, `ESTIMATORS`), `plus.coadapt.checkpoint` (resumable checkpoints) and
`plus.coadapt.evaluation` (`evaluate_plus`). Everything public is importable from `plus.coadapt` itself.
"""

from plus.coadapt.checkpoint import (
    CHECKPOINT_DIR,
    RESUMABLE_CHANGES,
    checkpoint_to_resume,
    cut_log_after,
    load_checkpoint,
    load_trained_summarizer,
    records_fingerprint,
    save_checkpoint,
)
from plus.coadapt.config import CoadaptConfig, coadapt_config
from plus.coadapt.estimators import ESTIMATORS
from plus.coadapt.evaluation import evaluate_plus
from plus.coadapt.loop import (
    EVAL_FIELDS,
    RECORD_FIELDS,
    CoadaptResult,
    Probe,
    RewardFn,
    RewardScorer,
    RolloutBatch,
    ValueModel,
    build_critic,
    build_summarizer,
    collect_rollout,
    prefix_split,
    score_summaries,
    summary_forward,
    train_plus,
    update_reward_model,
    update_summarizer,
)

__all__ = [
    "CHECKPOINT_DIR",
    "ESTIMATORS",
    "EVAL_FIELDS",
    "RECORD_FIELDS",
    "RESUMABLE_CHANGES",
    "CoadaptConfig",
    "CoadaptResult",
    "Probe",
    "RewardFn",
    "RewardScorer",
    "RolloutBatch",
    "ValueModel",
    "build_critic",
    "build_summarizer",
    "checkpoint_to_resume",
    "coadapt_config",
    "collect_rollout",
    "cut_log_after",
    "evaluate_plus",
    "load_trained_summarizer",
    "load_checkpoint",
    "prefix_split",
    "records_fingerprint",
    "save_checkpoint",
    "score_summaries",
    "summary_forward",
    "train_plus",
    "update_reward_model",
    "update_summarizer",
]
