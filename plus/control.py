"""The RL control on Pets: can RL teach this summarizer to name the user's animal, and where between a clean
reward and the full PLUS loop does the signal get lost?

Every rung of the ladder is the same loop (`plus.coadapt.train_plus`) on the same contexts, with the same
held-out probe (`pets_probe`); only the summary's length and the summarizer's reward change:

- ``first-word``: one token after the prefix ("This user prefers responses about"), reward +1 / -1 / 0 when it
  names the user's own contested animal / the other one / neither (ground truth, `pets_reward`);
- ``ground-truth``: whole summaries, the same reward from the animal the summary names first;
- ``frozen-rm``: whole summaries, the reward of a frozen reward model that reads summaries (trained on ideal
  one-animal summaries, `ideal_reward_model`): log sigmoid of its margin on the record's pair, as in PLUS;
- ``plus``: whole summaries and the co-trained reward model (PLUS itself).

Three variants of the last rung (`LEVERS`) ask why it breaks: ``plus-ideal-init`` co-trains a reward model that
starts as the ideal-summary one (does co-training erode a reward model that reads summaries, or is the trouble
only that a fresh one does not?); ``plus-rm-warmup`` lets the reward model train alone on the initial
summarizer's samples for `RM_WARMUP` batches before the summarizer's first update; ``plus-slow-rm`` starts as
``plus-ideal-init`` but its reward model learns slower than the summarizer (`SLOW_RM`: one pass per rollout batch
at a lower learning rate), so the summarizer can learn to name the animal before the reward model forgets how to
read it.

The ground-truth reward needs no pair: it says whether the summary carries the one fact that separates the
two Pets users. The reward model's reward carries it only on contested pairs (half of them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from plus.artifacts import read_json, read_metrics
from plus.coadapt import CoadaptConfig, CoadaptResult, Probe, RewardScorer, score_summaries, train_plus
from plus.data.pets import animal_named_first, contested_animals, ideal_summary, record_profile
from plus.summarizer import first_token_ids, generate_summaries

RUNGS: tuple[str, ...] = ("first-word", "ground-truth", "frozen-rm", "plus")
LEVERS: tuple[str, ...] = ("plus-ideal-init", "plus-rm-warmup", "plus-slow-rm")
"""Variants of the ``plus`` rung: both models co-trained, from another start."""
IDEAL_START: tuple[str, ...] = ("plus-ideal-init", "plus-slow-rm")
"""The levers whose co-trained reward model starts as the ideal-summary one (`ideal_reward_model`)."""
NAMED: tuple[str, ...] = ("own", "other", "neither")
LOGS: tuple[str, ...] = ("metrics.jsonl", "probe.jsonl")
REWARD_OF_NAMED = {"own": 1.0, "other": -1.0, "neither": 0.0}


def pets_reward(records: Sequence[dict], summaries: Sequence[str]) -> torch.Tensor:
    """(N,): +1 when the summary names the user's own contested animal first, -1 the other one, 0 neither
    (`plus.data.pets.animal_named_first`)."""
    if len(records) != len(summaries):
        raise ValueError(f"{len(records)} records for {len(summaries)} summaries")
    return torch.tensor(
        [REWARD_OF_NAMED[animal_named_first(z, record_profile(r))] for r, z in zip(records, summaries, strict=True)]
    )


def rung_config(config: CoadaptConfig, rung: str) -> CoadaptConfig:
    """``config`` as a rung runs it: ``first-word`` writes one token; the two rungs with a known or frozen
    reward leave the reward model as it is (``train_reward_model=False``); ``plus`` trains both."""
    if rung not in RUNGS + LEVERS:
        raise ValueError(f"Unknown rung {rung!r}; choose one of {RUNGS + LEVERS}")
    if rung == "plus" or rung in LEVERS:
        return replace(config, train_reward_model=True)
    changes = {"max_summary_tokens": 1} if rung == "first-word" else {}
    return replace(config, train_reward_model=False, **changes)


def ideal_records(records: Sequence[dict], prefix: str) -> list[dict]:
    """The records with the user description replaced by the ideal summary in the summarizer's own form
    (`plus.data.pets.ideal_summary`: "<prefix> dogs." for the helpful user), for a reward model trained on what
    a perfect Pets summarizer would write (the Oracle method reads the description)."""
    return [
        {**r, "ground_truth": {**r["ground_truth"], "description": ideal_summary(record_profile(r), prefix)}}
        for r in records
    ]


def pets_probe(
    records: Sequence[dict],
    config: CoadaptConfig,
    reward_model: nn.Module | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> Probe:
    """A `plus.coadapt.Probe` on held-out Pets ``records`` (the summarizer's prefix, temperature and length from
    ``config``). Its metrics:

    - ``first_word/own``, ``first_word/other``: the mean probability that the first word after the prefix is the
      user's own / the other contested animal; ``first_word/accuracy``: the share of contexts where own > other;
    - ``named/own``, ``named/other``, ``named/neither``: which of the two animals one summary sampled per context
      (seeded, so every probe draws with the same noise) names first;
    - with ``reward_model``: ``heldout/accuracy`` (all eval pairs) and ``heldout/contested_accuracy`` when it
      reads those summaries;
    - of the loop's own reward model (the probe's third argument, co-trained in ``plus``):
      ``loop/contested_accuracy`` when it reads those summaries (PLUS's own held-out accuracy), and
      ``loop/reads_own``, ``loop/reads_other``: its contested accuracy when every summary names the user's own /
      the other animal (`readout`; a reward model that ignores the summary scores both alike).

    The probe leaves torch's global RNG as it found it, so the training run does not depend on it."""
    if not records:
        raise ValueError("pets_probe needs at least one held-out record")
    contexts = [r["context"] for r in records]
    animals = [[f"{animal}s" for animal in contested_animals(record_profile(r))] for r in records]
    contested = np.array([bool(r.get("contested")) for r in records])
    text = {"prefill_marker": config.prefill_marker, "summary_prefix": config.summary_prefix}

    def probe(policy: nn.Module, tokenizer: PreTrainedTokenizerBase, loop_reward_model: nn.Module) -> dict[str, float]:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            generated = generate_summaries(
                policy, tokenizer, contexts, max_new_tokens=config.max_summary_tokens,
                temperature=config.temperature, top_p=config.top_p, batch_size=batch_size,
                keep_first_distribution=True, **text,
            )  # fmt: skip
        # (N, 2): own, other. The first token's distribution before sampling (end tokens not yet masked).
        probs = generated.first_logprobs.gather(1, first_token_ids(tokenizer, animals)).exp()
        named = [animal_named_first(z, record_profile(r)) for r, z in zip(records, generated.texts, strict=True)]
        metrics = {
            "first_word/own": float(probs[:, 0].mean()),
            "first_word/other": float(probs[:, 1].mean()),
            "first_word/accuracy": float((probs[:, 0] > probs[:, 1]).float().mean()),
        }
        metrics |= {f"named/{label}": float(np.mean([n == label for n in named])) for label in NAMED}
        if reward_model is not None:
            margins = score_summaries(RewardScorer(reward_model), generated.texts, records, "eval", batch_size)
            correct = (margins > 0).numpy()
            metrics["heldout/accuracy"] = float(correct.mean())
            if contested.any():
                metrics["heldout/contested_accuracy"] = float(correct[contested].mean())
        if contested.any():
            was_training = loop_reward_model.training
            margins = score_summaries(RewardScorer(loop_reward_model), generated.texts, records, "eval", batch_size)
            metrics["loop/contested_accuracy"] = float((margins > 0).numpy()[contested].mean())
            reads = readout(loop_reward_model, records, config.summary_prefix, batch_size)
            metrics |= {f"loop/reads_{label}": value for label, value in reads.items()}
            loop_reward_model.train(was_training)
        return metrics

    return probe


def run_rung(
    rung: str,
    config: CoadaptConfig,
    records: Sequence[dict],
    output_dir: str | Path,
    probe: Probe,
    frozen_reward_model: nn.Module | None = None,
    probe_every: int = 10,
) -> CoadaptResult:
    """Train one rung (`rung_config`) on the train ``records``, probing every ``probe_every`` rollout batches;
    resumes from ``output_dir``'s checkpoint. ``frozen-rm`` needs ``frozen_reward_model`` (and ``plus-ideal-init``
    and ``plus-slow-rm`` the trainable reward model they start from)."""
    config = rung_config(config, rung)
    reward_fn = pets_reward if rung in ("first-word", "ground-truth") else None
    reward_model = None
    if rung == "frozen-rm" or rung in IDEAL_START:
        if frozen_reward_model is None:
            raise ValueError(f"the {rung} rung needs frozen_reward_model (e.g. one trained on ideal summaries)")
        reward_model = frozen_reward_model
    return train_plus(
        config, records, output_dir, reward_model=reward_model, reward_fn=reward_fn, probe=probe,
        probe_every=probe_every,
    )  # fmt: skip


def pets_profiles(records: Sequence[dict]) -> dict[str, dict[str, int]]:
    """{user id: Pets profile} of ``records`` (their ``ground_truth.profile``), as `named_shares` reads them."""
    return {r["user_id"]: record_profile(r) for r in records}


def named_shares(rollouts: Sequence[dict], profiles: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Per rollout batch (index ``step``), the share of the sampled summaries (`rollouts.jsonl` rows) that name
    the user's own contested animal first, the other one, or neither (columns `NAMED`)."""
    if not rollouts:
        return pd.DataFrame(columns=list(NAMED), dtype=float)
    frame = pd.DataFrame(list(rollouts))
    missing = sorted(set(frame["user_id"]) - set(profiles))
    if missing:
        raise ValueError(f"no profile for users {missing} of the rollouts")
    frame["named"] = [
        animal_named_first(z, profiles[u]) for z, u in zip(frame["summary"], frame["user_id"], strict=True)
    ]
    shares = pd.crosstab(frame["step"], frame["named"], normalize="index")
    return shares.reindex(columns=list(NAMED), fill_value=0.0)


def read_curves(output_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A rung's training metrics (``metrics.jsonl``, per rollout batch) and its probe rows (``probe.jsonl``), each
    indexed by ``step``."""
    output_dir = Path(output_dir)
    metrics = pd.DataFrame(read_metrics(output_dir / "metrics.jsonl")).set_index("step")
    probes = pd.DataFrame(read_metrics(output_dir / "probe.jsonl")).set_index("step")
    return metrics, probes


def steps_to_plateau(curve: pd.Series, window: int = 3, tolerance: float = 0.05) -> int | None:
    """The first step (index of ``curve``) from which the curve stays within ``tolerance`` of its plateau, the
    mean of its last ``window`` points. None when there is no plateau to tell: fewer than ``window`` + 1 points,
    or last points that are not within ``tolerance`` of their mean (still rising or falling)."""
    curve = curve.dropna().sort_index()
    if len(curve) <= window:
        return None
    plateau = curve.iloc[-window:].mean()
    within = ((curve - plateau).abs() <= tolerance).to_numpy()
    if not within[-window:].all():
        return None
    outside = np.flatnonzero(~within)
    return int(curve.index[outside[-1] + 1 if len(outside) else 0])


def share_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95% interval of a share measured on ``n`` independent items (held-out contexts of one run)."""
    if n < 1:
        raise ValueError(f"share_interval needs at least one item, got n={n}")
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def readout(reward_model: nn.Module, records: Sequence[dict], prefix: str, batch_size: int = 16) -> dict[str, float]:
    """Held-out accuracy of ``reward_model`` when every summary names the user's own contested animal (``own``,
    the ceiling a summarizer can reach) or the other one (``other``, which a reward model that reads the summary
    must get wrong on contested pairs): the sanity bar of the frozen reward model. Contested pairs only."""
    from plus.data.pets import animal_summary

    contested = [r for r in records if r.get("contested")]
    if not contested:
        raise ValueError("readout needs contested held-out records")
    scores = {}
    for label, which in (("own", 0), ("other", 1)):
        summaries = [animal_summary(contested_animals(record_profile(r))[which], prefix) for r in contested]
        margins = score_summaries(RewardScorer(reward_model), summaries, contested, "eval", batch_size)
        scores[label] = float((margins > 0).float().mean())
    return scores


def flat_group_share(rewards: Sequence[float], num_samples: int) -> float:
    """The share of contexts whose ``num_samples`` consecutive summaries all got the same reward: RLOO's
    leave-one-out advantages are then all zero, and the context teaches the summarizer nothing."""
    groups = np.asarray(rewards, dtype=float)
    if num_samples < 1 or groups.size == 0 or groups.size % num_samples:
        raise ValueError(f"{groups.size} rewards do not split into groups of {num_samples} samples per context")
    return float((groups.reshape(-1, num_samples).std(1) < 1e-6).mean())


def _sizes(test: Sequence[dict]) -> dict[str, int]:
    """Held-out items per subset of `CURVES`: every context, and the contested ones."""
    return {"all": len(test), "contested": sum(bool(r.get("contested")) for r in test)}


CURVES = {"named/own": "all", "heldout/contested_accuracy": "contested"}
"""The probe curves a rung is judged by, with the held-out records each is measured on."""
LOOP_CURVES = ("loop/contested_accuracy", "loop/reads_own", "loop/reads_other")
"""The probe curves of the loop's own reward model, on the contested held-out pairs."""


def ladder_rows(output_dir: str | Path, test: Sequence[dict], rungs: Sequence[str] = RUNGS) -> list[dict]:
    """One row per rung trained under ``output_dir``: steps, time, the probe curves at the first and the last
    probe (with `share_interval`) and where they plateau (`steps_to_plateau`), the reward and the KL to the
    reference over the last 10 rollout batches, and `flat_group_share` in the first and the last 10."""
    sizes = _sizes(test)
    rows = []
    for rung in rungs:
        if not (Path(output_dir) / rung / "probe.jsonl").exists():
            continue
        metrics, probes = read_curves(Path(output_dir) / rung)
        row = {
            "rung": rung,
            "steps": int(metrics.index.max()),
            "seconds_per_step": float(metrics["perf/seconds_per_step"].mean()),
            "minutes": float(metrics["perf/seconds_per_step"].sum() + probes["perf/probe_seconds"].sum()) / 60,
            "reward_last10": float(metrics["summarizer/reward"].iloc[-10:].mean()),
            "kl_last10": float(metrics["summarizer/kl"].iloc[-10:].mean()) if "summarizer/kl" in metrics else None,
        }
        rollouts = pd.DataFrame(read_metrics(Path(output_dir) / rung / "rollouts.jsonl"))
        samples = read_json(Path(output_dir) / rung / "config.json")["num_samples"]
        steps = sorted(rollouts["step"].unique())
        for when, window in (("first10", steps[:10]), ("last10", steps[-10:])):
            rewards = rollouts.loc[rollouts["step"].isin(window), "reward"]
            row[f"flat_groups_{when}"] = flat_group_share(rewards.tolist(), samples)
        for key, subset in CURVES.items():
            curve = probes[key]
            for when, value in (("start", curve.iloc[0]), ("end", curve.iloc[-1])):
                low, high = share_interval(float(value), sizes[subset])
                row |= {f"{key}@{when}": float(value), f"{key}@{when}_ci": (low, high)}
            row[f"{key}@plateau_step"] = steps_to_plateau(curve)
        row["named/other@start"], row["named/other@end"] = (float(probes["named/other"].iloc[i]) for i in (0, -1))
        for key in LOOP_CURVES:  # the loop's own reward model (probes written before it was measured lack them)
            if key in probes:
                for when, value in (("start", float(probes[key].iloc[0])), ("end", float(probes[key].iloc[-1]))):
                    row |= {f"{key}@{when}": value, f"{key}@{when}_ci": share_interval(value, sizes["contested"])}
        rows.append(row)
    return rows


def ladder_table(rows: Sequence[dict], test: Sequence[dict], seed: int = 0) -> list[dict]:
    """`ladder_rows` as ``table.json`` rows (``../shared/RESULTS.md``): per rung (method ``control-<rung>``),
    the share of held-out summaries naming the user's own animal first and the frozen reward model's accuracy
    on contested held-out pairs reading them, at the last probe."""
    sizes = _sizes(test)
    metric = {"named/own": "own_named_share", "heldout/contested_accuracy": "accuracy"}
    table = []
    for row in rows:
        for key, subset in CURVES.items():
            low, high = row[f"{key}@end_ci"]
            table.append(
                {
                    "dataset": "pets", "split": "test", "subset": subset, "method": f"control-{row['rung']}",
                    "metric": metric[key], "mean": row[f"{key}@end"], "ci_low": low, "ci_high": high,
                    "n": sizes[subset], "seeds": [seed], "reported": None,
                }
            )  # fmt: skip
    return table


LABELS = {
    "first-word": "first word, known reward",
    "ground-truth": "whole summary, known reward",
    "frozen-rm": "whole summary, frozen reward model",
    "plus": "whole summary, co-trained reward model (PLUS)",
    "plus-ideal-init": "PLUS, reward model starting as the frozen one",
    "plus-slow-rm": "PLUS, reward model starting as the frozen one, learning slowly",
    "plus-rm-warmup": "PLUS, reward model trained alone first",
}


SUMMARY = {
    "steps": ("rollout batches", "{:.0f}"),
    "named/own@start": ("own animal named first: start", "{:.0%}"),
    "named/own@end": ("own animal named first: end", "{:.0%}"),
    "named/other@end": ("other animal named first: end", "{:.0%}"),
    "named/own@plateau_step": ("own-animal share: plateau (batch)", "{:.0f}"),
    "heldout/contested_accuracy@start": ("contested accuracy: start", "{:.0%}"),
    "heldout/contested_accuracy@end": ("contested accuracy: end", "{:.0%}"),
    "heldout/contested_accuracy@plateau_step": ("contested accuracy: plateau (batch)", "{:.0f}"),
    "reward_last10": ("reward, last 10 batches", "{:.2f}"),
    "kl_last10": ("KL (nats), last 10 batches", "{:.2f}"),
    "flat_groups_first10": ("groups with one reward: first 10", "{:.0%}"),
    "flat_groups_last10": ("groups with one reward: last 10", "{:.0%}"),
    "seconds_per_step": ("seconds per batch", "{:.0f}"),
    "minutes": ("minutes", "{:.0f}"),
}
"""The rows of the ladder's summary table (`ladder_summary`): `ladder_rows` key, label, format."""


def ladder_summary(rows: Sequence[dict]) -> pd.DataFrame:
    """`ladder_rows` as the page's table: one column per rung, readable row labels, values formatted (a plateau
    never reached reads "not reached")."""
    columns = {}
    for row in rows:
        cells = {}
        for key, (label, pattern) in SUMMARY.items():
            value = row.get(key)
            if value is None or value != value:
                cells[label] = "not reached" if key.endswith("plateau_step") else ""
            else:
                cells[label] = pattern.format(value)
        columns[row["rung"]] = cells
    return pd.DataFrame(columns)


def _cell(row: dict, key: str, when: str) -> str:
    low, high = row[f"{key}@{when}_ci"]
    return f"{row[f'{key}@{when}']:.0%} [{low:.0%}, {high:.0%}]"


def learned(row: dict, key: str = "named/own") -> bool:
    """Whether the rung's last probe is above its first beyond the noise (the two intervals do not overlap)."""
    return row[f"{key}@end_ci"][0] > row[f"{key}@start_ci"][1]


def ladder_note(rows: Sequence[dict], bars: dict[str, float], test: Sequence[dict]) -> str:
    """The page's reading of the ladder, every number from ``rows`` (`ladder_rows`) and ``bars`` (`readout`)."""
    contested = _sizes(test)["contested"]
    lines = [
        f"- Sanity bar: the frozen reward model reads summaries. On the {contested} contested held-out pairs it "
        f"ranks {bars['own']:.0%} right when the summary names the user's own animal and {bars['other']:.0%} when "
        f"it names the other one "
        + ("(holds)." if bars["own"] >= 0.9 and bars["other"] <= 0.1 else "(does not hold: read the rest with care).")
    ]
    for row in rows:
        plateau = row["named/own@plateau_step"]
        lines.append(
            f"- {LABELS[row['rung']]}: summaries naming the user's own animal first "
            f"{_cell(row, 'named/own', 'start')} before training, {_cell(row, 'named/own', 'end')} after "
            f"{row['steps']} rollout batches ("
            + ("learned beyond the noise" if learned(row) else "no difference beyond the noise")
            + (f"; plateau from batch {plateau}" if plateau is not None else "; no plateau yet")
            + f"; the other animal {row['named/other@start']:.0%} -> {row['named/other@end']:.0%}); held-out "
            f"contested accuracy with the frozen reward model {_cell(row, 'heldout/contested_accuracy', 'start')} -> "
            f"{_cell(row, 'heldout/contested_accuracy', 'end')} ("
            + ("beyond" if learned(row, "heldout/contested_accuracy") else "no difference beyond")
            + f" the noise); KL to the reference {row['kl_last10']:.2f} nats "
            f"(last 10 batches); contexts whose samples all got the same reward (no RLOO signal) "
            f"{row['flat_groups_first10']:.0%} in the first 10 batches, {row['flat_groups_last10']:.0%} in the last "
            f"10; {row['seconds_per_step']:.0f} s per rollout batch, {row['minutes']:.0f} min in all."
        )
    for row in rows:
        if "loop/reads_own@end" not in row:
            continue
        reads = {when: f"{row[f'loop/reads_own@{when}']:.0%} / {row[f'loop/reads_other@{when}']:.0%}"
                 for when in ("start", "end")}  # fmt: skip
        lines.append(
            f"- {LABELS[row['rung']]}: its own reward model, given the summary that names the user's own / the other "
            f"animal, ranks the contested held-out pairs right {reads['start']} of the time before training and "
            f"{reads['end']} at the last probe (a model that reads the summary: near 100% / 0%; one that ignores it: "
            f"alike); reading the summarizer's own summaries, {_cell(row, 'loop/contested_accuracy', 'start')} -> "
            f"{_cell(row, 'loop/contested_accuracy', 'end')}."
        )
    if rows:
        learns = [LABELS[row["rung"]] for row in rows if learned(row)]
        stalls = [LABELS[row["rung"]] for row in rows if not learned(row)]
        lines.append(
            "- Learns beyond the noise: " + ("; ".join(learns) or "none")
            + ". Does not: " + ("; ".join(stalls) or "none") + "."
        )  # fmt: skip
    lines.append("- Intervals: 95% Wilson intervals over the held-out contexts of one training seed.")
    return "\n".join(lines)


# --- the ladder as one experiment: data, reward model and probe shared by the CLI and notebook 04_rl_control -----

RM_WARMUP: dict[str, int] = {"smoke": 1, "cpu": 20, "gpu": 50}
"""Rollout batches in which ``plus-rm-warmup``'s reward model trains alone before the summarizer's first update."""
SLOW_RM: dict[str, dict] = {
    "smoke": {"reward_epochs": 1, "reward_lr": 3e-4},
    "cpu": {"reward_epochs": 1, "reward_lr": 3e-4},
    "gpu": {"reward_epochs": 1, "reward_lr": 3e-6},
}
"""``plus-slow-rm``'s reward model: one pass per rollout batch at about a third of the profile's learning rate
(cpu: 1 pass at 3e-4 instead of 4 at 1e-3, some 13 times less movement per batch)."""
STEPS: dict[str, dict[str, int]] = {
    profile: steps
    | {
        "plus-ideal-init": steps["plus"],
        "plus-rm-warmup": steps["plus"] + RM_WARMUP[profile],
        "plus-slow-rm": steps["plus"],
    }
    for profile, steps in {
        "smoke": {"first-word": 2, "ground-truth": 2, "frozen-rm": 2, "plus": 2},
        "cpu": {"first-word": 60, "ground-truth": 120, "frozen-rm": 120, "plus": 60},
        "gpu": {"first-word": 200, "ground-truth": 400, "frozen-rm": 400, "plus": 400},
    }.items()
}
"""Rollout batches per rung at each profile (the first word learns in far fewer; at cpu, PLUS gets the first
word's budget: its steps are the slowest and the 2-core budget ran out). ``plus-rm-warmup`` gets PLUS's
co-training budget after its warm-up."""
SIZES: dict[str, dict[str, int]] = {
    "smoke": {"num_train": 16, "num_test": 8},
    "cpu": {"num_train": 256, "num_test": 64},
    "gpu": {"num_train": 1024, "num_test": 256},
}
"""Pets records: ``num_train`` to train on, ``num_test`` held out for the probe (half of them contested)."""


@dataclass
class Ladder:
    """What every rung of one profile shares: the loop's config, the records, the ideal-summary reward model
    and the held-out probe."""

    profile: str
    config: CoadaptConfig
    train: list[dict]
    test: list[dict]
    ideal_reward_model: nn.Module
    probe: Probe
    output_dir: Path

    def steps(self, rung: str) -> int:
        return STEPS[self.profile][rung]

    def rung_dir(self, rung: str) -> Path:
        return self.output_dir / rung

    def rung_config(self, rung: str) -> CoadaptConfig:
        """The loop's config for ``rung`` as `run` trains it (before `rung_config` applies the rung's switches)."""
        steps = self.steps(rung)
        per_episode = len(self.train) // self.config.rollout_batch_size
        config = replace(
            self.config, max_steps=steps, num_episodes=math.ceil(steps / per_episode), checkpoint_every=10
        )
        if rung == "plus-rm-warmup":
            config = replace(config, summarizer_start=RM_WARMUP[self.profile])
        if rung == "plus-slow-rm":
            config = replace(config, **SLOW_RM[self.profile])
        return config

    def finished(self, rung: str) -> bool:
        """Whether ``output_dir/<rung>`` holds a finished run of this very config: its ``config.json`` matches and
        both ``metrics.jsonl`` and ``probe.jsonl`` reach the last rollout batch. The ladder's page reads only
        these logs, so a finished run is not trained again (its weights are not kept in git)."""
        directory = self.rung_dir(rung)
        if not all((directory / name).exists() for name in ("config.json", "metrics.jsonl", "probe.jsonl")):
            return False
        try:
            written = CoadaptConfig.from_dict(read_json(directory / "config.json"))
        except (TypeError, KeyError, ValueError):
            return False
        steps = self.steps(rung)
        reached = [max((row["step"] for row in read_metrics(directory / log)), default=0) for log in LOGS]
        return written == rung_config(self.rung_config(rung), rung) and min(reached) >= steps

    def run(self, rung: str, probe_every: int | None = None) -> CoadaptResult | None:
        """Train (or resume from its checkpoint) ``rung`` into ``output_dir/<rung>``; None when it has
        `finished` already (its logs are what the page reads)."""
        if self.finished(rung):
            return None
        config = self.rung_config(rung)
        steps = self.steps(rung)
        every = probe_every or max(1, steps // 12)
        reward_model = self.ideal_reward_model
        if rung in IDEAL_START:  # a trainable copy: the frozen one stays the probe's judge
            # `ladder` has cached it under ideal-rm/, so this loads that copy (trained at the profile's settings)
            reward_model = ideal_reward_model(self.config, self.train, self.output_dir / "ideal-rm")
        return run_rung(rung, config, self.train, self.rung_dir(rung), self.probe, reward_model, every)


def ideal_reward_model(
    config: CoadaptConfig, records: Sequence[dict], output_dir: str | Path, epochs: int = 8, seed: int = 0
) -> nn.Module:
    """The Oracle reward model trained on `ideal_records` (what a perfect summarizer would write), with the
    reward-model benchmark's cpu setting (lr 1e-3 for backbone and head, 8 epochs, batch 8); cached in
    ``output_dir/checkpoint`` and loaded from there when present."""
    from plus.baselines import BaselineConfig, build_method, load_method
    from plus.train import TrainConfig, train_reward_model

    output_dir = Path(output_dir)
    if (output_dir / "checkpoint" / "config.json").exists():
        return load_method(output_dir / "checkpoint").model
    method = build_method(BaselineConfig("oracle", reward_model=config.reward_model), seed=seed)
    train = TrainConfig(
        learning_rate=config.reward_lr, head_learning_rate=config.reward_lr, batch_size=8, num_epochs=epochs,
        seed=seed,
    )  # fmt: skip
    train_reward_model(method, ideal_records(records, config.summary_prefix), train, output_dir)
    return method.model


def ladder(profile: str, output_dir: str | Path, seed: int = 0, changes: dict | None = None) -> Ladder:
    """The control ladder at ``profile`` (`plus.coadapt.coadapt_config`, `SIZES`) on Pets, writing under
    ``output_dir``: the ideal-summary reward model in ``ideal-rm/`` (trained once), each rung in ``<rung>/``.
    ``changes`` (`CoadaptConfig` fields) apply to the loop only: the ideal-summary reward model and the probe
    keep the profile's settings, so a lever's curves compare with the ladder's own."""
    from plus.coadapt import coadapt_config
    from plus.data.registry import build_dataset

    if profile not in SIZES:
        raise ValueError(f"Unknown profile {profile!r} for the control ladder; choose one of {sorted(SIZES)}")
    output_dir = Path(output_dir)
    config = coadapt_config(profile, seed=seed)
    records = build_dataset("pets", seed=seed, **SIZES[profile])
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    reward_model = ideal_reward_model(config, train, output_dir / "ideal-rm", epochs=1 if profile == "smoke" else 8)
    reward_model.requires_grad_(False)
    probe = pets_probe(test, config, reward_model, batch_size=config.micro_batch_size, seed=seed)
    return Ladder(profile, replace(config, **(changes or {})), train, test, reward_model, probe, output_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m plus.control RUNG [RUNG ...] --profile cpu --output-dir results/cpu/04_rl_control``: train
    the rungs in turn (resuming from their checkpoints), as notebook 04_rl_control does."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m plus.control", description=main.__doc__)
    parser.add_argument("rungs", nargs="+", choices=RUNGS + LEVERS)
    parser.add_argument("--profile", default="cpu", choices=sorted(SIZES))
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-every", type=int, default=None, help="rollout batches between probes")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="change one CoadaptConfig field of the loop (repeatable), e.g. --set reward_epochs=1",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.probe_every is not None and args.probe_every < 1:
        parser.error(f"--probe-every must be a positive number of rollout batches, got {args.probe_every}")
    from plus.coadapt.experiment import config_changes

    experiment = ladder(args.profile, args.output_dir, args.seed, config_changes(args.set))
    for rung in args.rungs:
        experiment.run(rung, args.probe_every)


if __name__ == "__main__":
    main()
