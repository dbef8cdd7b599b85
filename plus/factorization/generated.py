"""PReF's personalized alignment on generated text: best-of-N over a generator's samples, ranked by a new user's
lambda . phi after k answers, judged by the user's utility for what the samples say (`plus.judge.StyleJudge`).

The PReF experiment (`plus.factorization.experiment`) picks among the response bank's pre-written responses, whose
attribute scores are known. Here the candidates are N answers that a generator (SmolLM2 at cpu, any causal LM id
at gpu) writes for each of the topic prompts, so phi, fitted on the bank, must score text it has never seen:

- **candidates** (`generate_candidates`): per seed, N samples per prompt; each sample's instructions ask for one
  attribute pole drawn at random (or for nothing: one draw in 15), so that the N samples differ in style and the
  ranking has something to choose (a 135M generator's plain samples hardly do). An empty sample is drawn again;
- **rankings**: PReF (active questions, `PrefNewUser`, the experiment's J) after k answers of each new user of the
  population, and the single BT model (answers ignored), both on the frozen MiniLM features of (prompt, sample)
  on the bank's scale; the **judge's best** (the sample the user's judged utility ranks first) is the ceiling;
  **lambda on the true attributes** is the reference for a phi that transfers: a lambda fitted on the same k
  answers (the pairs PReF asked) over the bank's known attribute scores, applied to the samples' judged ones;
- **win rate vs a random sample**: per (user, prompt), the user's comparison of the picked sample with each of the
  N samples, averaged (the expected outcome against a uniformly random sample; ties count half), so a ranking
  that knows nothing scores 50%; 95% bootstrap over seeds and (user, prompt) items;
- **transfer**: the share of a prompt's sample pairs with different judged utility that lambda . phi orders as
  the judge does.

Departures from PReF's (Shenfeld et al.) best-of-N on generations:
- the candidates come from the profile's small generator (SmolLM2-135M-Instruct at cpu), each asked for an
  attribute pole drawn at random, not from the paper's policy model sampled as it is: a 135M model's plain
  samples barely differ in style, which leaves a ranking nothing to choose;
- the judge is `plus.judge.StyleJudge` (content length, a closing question, exclamation marks and cue words;
  validated on held-out bank responses, not on free text), not an LLM judge;
- the picked sample is compared with a random sample of the same N (expected outcome, ties half), not with the
  default model's answer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from plus.artifacts import as_read_back, read_json, write_json
from plus.config import check_number
from plus.data.attributes import ATTRIBUTES, POLE_DESCRIPTIONS
from plus.data.topics import TOPICS
from plus.evaluation import bootstrap_interval
from plus.factorization.core import fit_user_weights
from plus.factorization.experiment import (
    PrefExperimentConfig,
    _embed_cached,
    _standardise,
    build_attributes_problem,
    pref_experiment_config,
    torch_threads,
)
from plus.factorization.protocol import PrefNewUser, SingleBT, answer_order, pair_metrics, question_order
from plus.judge import StyleJudge, fit_bank_judge, style_scores

PREF, TRUE_PHI, SINGLE_BT, JUDGE_BEST = "pref-active", "true-phi", "single-bt", "judge-best"
LABELS = {PREF: "PReF (active)", TRUE_PHI: "lambda on the true attributes", SINGLE_BT: "Single BT",
          JUDGE_BEST: "judge's best (ceiling)"}  # fmt: skip
REPORTED_WIN_RATE = {PREF: {5: 0.68, 10: 0.705, 40: 0.81}, SINGLE_BT: 0.548}
"""PReF's reported best-of-N win rates on Attributes (`plus.factorization.experiment.REPORTED_ATTRIBUTES`; read
off the paper's figure, against the default model's answer, judged by an LLM)."""
NO_HINT_SHARE = 15
"""One sample in this many carries no style request (the others ask for one of the 14 attribute poles)."""
MAX_REDRAWS = 5


@dataclass(frozen=True)
class GeneratedConfig:
    """One profile's best-of-N over generations."""

    generator: str
    """A causal chat LM `plus.models` loads (the profile's summarizer model)."""
    pref: PrefExperimentConfig
    """The PReF fit (population, J, embedding model, seeds)."""
    num_prompts: int = 40
    """Topic prompts (`plus.data.topics.TOPICS`, the first ones) answered per seed."""
    num_candidates: int = 16
    """N samples per prompt."""
    answer_counts: tuple[int, ...] = (0, 5, 10, 40)
    """Numbers of a new user's answers after which PReF ranks the samples."""
    max_new_tokens: int = 80
    temperature: float = 0.8
    batch_size: int = 32
    judge_fit_bank: int = 0
    """Seed of the response bank whose known verbosity fits the judge's cuts; the next seed's bank validates it."""
    skip_generation: bool = field(default=False, compare=False)
    """Read the stored samples only; raise when some are missing (the book's re-execution)."""

    def __post_init__(self) -> None:
        for name in ("num_prompts", "max_new_tokens", "batch_size"):
            check_number(self, name, 1, integer=True)
        check_number(self, "num_candidates", 2, integer=True)
        check_number(self, "temperature", 0.0, above=True)
        if self.num_prompts > len(TOPICS):
            raise ValueError(f"GeneratedConfig.num_prompts is at most {len(TOPICS)} (the topic prompts), got "
                             f"{self.num_prompts}")  # fmt: skip
        if not self.answer_counts or min(self.answer_counts) < 0:
            raise ValueError(f"GeneratedConfig.answer_counts must be non-negative and non-empty, got "
                             f"{self.answer_counts}")  # fmt: skip

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.pref.seeds


def generated_config(profile_name: str, num_factors: int = 7, **changes) -> GeneratedConfig:
    """The profile's run (`plus.config.PROFILES`): its summarizer model as generator, PReF as notebook 05's
    factorization sizes it (J = 7: the Attributes users span seven attributes); smoke: 2 prompts x 3 samples of 8
    tokens, one seed, k = 0 and 2."""
    from plus.config import get_profile

    profile = get_profile(profile_name)
    pref = pref_experiment_config(profile, num_factors=num_factors, finetune=None)
    config = GeneratedConfig(generator=profile.summarizer_model, pref=pref)
    if profile.name == "smoke":
        config = replace(config, num_prompts=2, num_candidates=3, max_new_tokens=8, batch_size=6,
                         answer_counts=(0, 2), pref=replace(pref, seeds=(0,)))  # fmt: skip
    return replace(config, **changes)


def style_hints(config: GeneratedConfig, seed: int) -> list[list[str | None]]:
    """The style request of each sample, (prompts, N): an attribute pole's description as the generator's
    "what we know about this user" line, or None (no request), drawn with a seeded RNG."""
    rng = random.Random(f"hints-{seed}")
    poles = list(POLE_DESCRIPTIONS)
    return [
        [None if rng.randrange(NO_HINT_SHARE) == 0 else f"This user prefers {POLE_DESCRIPTIONS[rng.choice(poles)]}."
         for _ in range(config.num_candidates)]
        for _ in range(config.num_prompts)
    ]  # fmt: skip


def generate_candidates(config: GeneratedConfig, output_dir: str | Path) -> dict:
    """Every seed's samples, ``{"samples": {seed: (prompts, N) texts}, "hints": ..., "seconds": {seed: s}}``, kept
    in ``output_dir/generations.json`` after each seed (a stopped run resumes; a file written under another
    config is set aside, not used). An empty sample is drawn again with another seed, up to `MAX_REDRAWS` times."""
    from plus.generation import generate_responses
    from plus.models import load_causal_lm

    path = Path(output_dir) / "generations.json"
    key = as_read_back({k: v for k, v in asdict(config).items() if k != "skip_generation"})
    key["pref"] = {"seeds": key["pref"]["seeds"]}  # the samples depend on the seeds, not on the PReF fit
    stored = read_json(path) if path.exists() else None
    if stored is not None and stored.get("key") != key:
        path.rename(path.with_suffix(".json.stale"))  # another run's samples: kept aside, never mixed in
        stored = None
    out = stored or {"key": key, "samples": {}, "hints": {}, "seconds": {}}
    todo = [seed for seed in config.seeds if str(seed) not in out["samples"]]
    if todo and config.skip_generation:
        raise FileNotFoundError(f"{path}: no stored samples for seeds {todo} (run with skip_generation=False)")
    prompts = [question for question, _ in TOPICS[: config.num_prompts]]
    model = tokenizer = None
    for seed in tqdm(todo, desc="samples (seed)"):
        if model is None:
            model, tokenizer = load_causal_lm(config.generator)
        start = time.perf_counter()
        hints = style_hints(config, seed)
        flat_prompts = [p for p in prompts for _ in range(config.num_candidates)]
        flat_hints = [h for row in hints for h in row]
        texts = generate_responses(
            model, tokenizer, flat_prompts, flat_hints, max_new_tokens=config.max_new_tokens,
            temperature=config.temperature, batch_size=config.batch_size, seed=seed,
        )  # fmt: skip
        for redraw in range(1, MAX_REDRAWS + 1):
            empty = [i for i, t in enumerate(texts) if not t.strip()]
            if not empty:
                break
            again = generate_responses(
                model, tokenizer, [flat_prompts[i] for i in empty], [flat_hints[i] for i in empty],
                max_new_tokens=config.max_new_tokens, temperature=config.temperature, batch_size=config.batch_size,
                seed=seed + 1000 * redraw,
            )  # fmt: skip
            for i, text in zip(empty, again, strict=True):
                texts[i] = text
        if any(not t.strip() for t in texts):
            raise ValueError(f"seed {seed}: the generator wrote an empty sample {MAX_REDRAWS + 1} times running")
        n = config.num_candidates
        out["samples"][str(seed)] = [texts[b * n : (b + 1) * n] for b in range(config.num_prompts)]
        out["hints"][str(seed)] = hints
        out["seconds"][str(seed)] = time.perf_counter() - start
        write_json(path, out)
    return out


def expected_outcomes(utilities: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Per prompt, the user's comparison of the picked sample with a uniformly random one of the N (1 win, 0 loss,
    0.5 tie, averaged over the N): utilities (B, N), picked (B,) -> (B,)."""
    mine = utilities.gather(1, picked[:, None])  # (B, 1)
    return ((mine > utilities).float() + 0.5 * (mine == utilities).float()).mean(1)


def ordered_like_judge(rewards: torch.Tensor, utilities: torch.Tensor) -> tuple[float, int]:
    """Over every prompt's sample pairs whose judged utilities differ: the share that ``rewards`` orders the same
    way (a reward tie counts half) and the number of such pairs. rewards, utilities (B, N)."""
    i, j = torch.triu_indices(utilities.shape[1], utilities.shape[1], offset=1)
    du, dr = utilities[:, i] - utilities[:, j], rewards[:, i] - rewards[:, j]
    keep = du != 0
    if not keep.any():
        return float("nan"), 0
    agree = ((du > 0) & (dr > 0)) | ((du < 0) & (dr < 0))
    return float((agree.float() + 0.5 * (dr == 0).float())[keep].mean()), int(keep.sum())


def fit_judge(config: GeneratedConfig) -> tuple[StyleJudge, dict[str, dict]]:
    """The judge fitted on bank ``judge_fit_bank`` and its accuracy per attribute on the next seed's bank
    (`plus.judge.fit_bank_judge`)."""
    return fit_bank_judge(config.judge_fit_bank)


def _cell(table: Sequence[Sequence[float]], reported: float | None = None) -> dict | None:
    """Mean and 95% bootstrap interval of ``table[seed][item]``; None when a seed has no item (e.g. no sample pair
    whose judged utilities differ)."""
    table = [row for row in table if len(row)]
    if not table:
        return None
    low, high = bootstrap_interval(table)
    return {"mean": float(np.mean(np.concatenate([np.asarray(r, float) for r in table]))), "ci_low": low,
            "ci_high": high, "n": len(table[0]), "reported": reported}  # fmt: skip


def run_generated(config: GeneratedConfig, samples: dict) -> dict:
    """Fit PReF and the single BT model per seed, score every seed's samples, and judge the picks for every new
    user. Returns ``{"config", "judge", "judge_accuracy", "spread", "cells", "transfer", "bank_accuracy",
    "examples", "picks", "seconds"}``: ``cells[method][k]`` the win rate vs a random sample (``k`` "-" for the rankings
    that read no answers), ``transfer[method][k]`` the share of sample pairs ordered as the judge does,
    ``bank_accuracy[method][k]`` the accuracy on the user's held-out bank pairs, ``spread`` the share of samples
    with a non-zero judged score per attribute, ``picks`` PReF's pick per prompt after the most answers for every
    new user of the first seed (what `api_check` asks an LLM about); each cell with its 95% bootstrap interval
    over seeds and items ((user, prompt) for win rates, users for the others)."""
    began = time.perf_counter()
    judge, accuracy = fit_judge(config)
    prompts = [question for question, _ in TOPICS[: config.num_prompts]]
    counts = sorted(config.answer_counts)
    paired: list[list[float]] = []  # per seed: PReF at the most answers minus the single BT model, per item
    answered_by = {PREF: {k: [] for k in counts}, TRUE_PHI: {k: [] for k in counts}, SINGLE_BT: {"-": []}}
    wins: dict[str, dict] = {**answered_by, JUDGE_BEST: {"-": []}}
    transfer: dict[str, dict] = {name: {k: [] for k in by_k} for name, by_k in answered_by.items()}
    bank: dict[str, dict] = {name: {k: [] for k in by_k} for name, by_k in answered_by.items()}
    spread, examples, picks, cache = [], [], [], {}
    for seed in tqdm(config.seeds, desc="PReF fits (seed)"):
        try:
            texts = samples["samples"][str(seed)]
        except KeyError:
            raise ValueError(f"no samples for seed {seed} (generate_candidates first)") from None
        if len(texts) != config.num_prompts or any(len(row) != config.num_candidates for row in texts):
            raise ValueError(f"seed {seed}: expected {config.num_prompts} x {config.num_candidates} samples")
        problem = build_attributes_problem(replace(config.pref, seeds=(seed,)), seed, cache)
        inputs = [f"{p}\n\n{t}" for p, row in zip(prompts, texts, strict=True) for t in row]
        features = _standardise(_embed_cached(inputs, config.pref, cache), like=problem.raw_features)
        scores = torch.tensor(
            [[[style_scores(t, judge)[a] for a in ATTRIBUTES] for t in row] for row in texts], dtype=torch.float32
        )  # (B, N, 7)
        spread.append((scores != 0).float().mean((0, 1)))
        known = problem.attribute_scores  # (R, 7): the bank's true attribute scores, and the samples' judged ones
        true_bank, true_samples = _standardise(known), _standardise(scores, like=known)
        with torch_threads(config.pref.num_threads):
            pref, bt = PrefNewUser(config.pref.pref, active=True), SingleBT(num_epochs=config.pref.num_bt_epochs)
            for method in (pref, bt):
                method.fit(problem.bank, problem.population, seed)
            phi = pref.model.phi(features).view(config.num_prompts, config.num_candidates, -1)  # (B, N, J)
            with torch.no_grad():
                bt_rewards = bt.head(features).view(config.num_prompts, config.num_candidates)
            rows: dict[tuple[str, object], list] = {}  # per (method, k): this seed's items
            per_user: dict[tuple[str, object], dict[str, list]] = {}  # per (method, k): transfer and bank accuracy
            for position, user in enumerate(problem.new_users):
                profile = problem.new_user_truth[user.user_id]["profile"]
                weights = torch.tensor([profile.get(a, 0.0) for a in ATTRIBUTES])
                utilities = scores @ weights  # (B, N)
                scored = {(SINGLE_BT, "-"): (bt_rewards, bt.rewards)}
                order = question_order(user, seed, position)
                for n, answered in answer_order(pref, problem.bank, user, max(counts), order):
                    if n in counts:
                        pairs, labels = user.question_pairs[answered], user.question_labels[answered]
                        lam = pref.user_weights(pairs, labels)
                        scored[(PREF, n)] = (phi @ lam, pref.phi @ lam)
                        diffs = true_bank[pairs[:, 0]] - true_bank[pairs[:, 1]]
                        prior, settings = torch.zeros(len(ATTRIBUTES)), config.pref.pref
                        lam_true = fit_user_weights(diffs, labels, prior, settings.user_l2, settings.num_newton_steps)
                        scored[(TRUE_PHI, n)] = (true_samples @ lam_true, true_bank @ lam_true)
                for (name, k), (rewards, bank_rewards) in scored.items():
                    rows.setdefault((name, k), []).append(expected_outcomes(utilities, rewards.argmax(1)))
                    share, _ = ordered_like_judge(rewards, utilities)
                    test = bank_rewards[user.test_pairs[:, 0]] - bank_rewards[user.test_pairs[:, 1]]
                    slot = per_user.setdefault((name, k), {"transfer": [], "bank": []})
                    if share == share:  # NaN: every sample ties for this user
                        slot["transfer"].append(share)
                    slot["bank"].append(pair_metrics(test, user.test_labels)["accuracy"])
                rows.setdefault((JUDGE_BEST, "-"), []).append(expected_outcomes(utilities, utilities.argmax(1)))
                if seed == config.seeds[0]:
                    truth = problem.new_user_truth[user.user_id]
                    picks.append({"user": user.user_id, "description": truth["description"], "profile": profile,
                                  "picked": scored[(PREF, counts[-1])][0].argmax(1).tolist()})  # fmt: skip
                if seed == config.seeds[0] and position < 2:
                    pick = (phi @ lam).argmax(1)[0].item()
                    examples.append({"user": user.user_id, "prompt": prompts[0], "picked": texts[0][pick],
                                     "picked utility": float(utilities[0, pick]),
                                     "best utility": float(utilities[0].max()),
                                     "random sample": texts[0][0], "its utility": float(utilities[0, 0])})  # fmt: skip
        for (name, k), items in rows.items():
            wins[name][k].append(torch.cat(items).tolist())  # one seed's (user, prompt) items
        paired.append((torch.cat(rows[(PREF, counts[-1])]) - torch.cat(rows[(SINGLE_BT, "-")])).tolist())
        for (name, k), slot in per_user.items():
            transfer[name][k].append(slot["transfer"])
            bank[name][k].append(slot["bank"])

    def cells_of(tables: dict[str, dict]) -> dict[str, dict[str, dict]]:
        return {name: {str(k): _cell(t, _reported(name, k) if tables is wins else None) for k, t in by_k.items()}
                for name, by_k in tables.items()}  # fmt: skip

    return {
        "config": asdict(config),
        "judge": asdict(judge),
        "judge_accuracy": accuracy,
        "spread": dict(zip(ATTRIBUTES, torch.stack(spread).mean(0).tolist(), strict=True)),
        "cells": cells_of(wins),
        "difference": {"name": f"{PREF}@{counts[-1]} - {SINGLE_BT}", **_cell(paired)},
        "transfer": cells_of(transfer),
        "bank_accuracy": cells_of(bank),
        "num_new_users": len(problem.new_users),
        "examples": examples,
        "picks": picks,
        "seconds": time.perf_counter() - began,
        "generation_seconds": sum(samples["seconds"].get(str(s), 0.0) for s in config.seeds),
    }


def _reported(name: str, k) -> float | None:
    value = REPORTED_WIN_RATE.get(name)
    return value.get(k) if isinstance(value, dict) else value


def _by_answers(by_k: dict) -> list:
    """The items of a ``{k: cell}`` dict in increasing number of answers (JSON keys sort as text: "10" < "5")."""
    return sorted(by_k.items(), key=lambda item: -1 if item[0] == "-" else int(item[0]))


def _metric(name: str, k: str) -> str:
    return name if k == "-" else f"{name}@{k}"


def generated_rows(result: dict) -> list[dict]:
    """The ``table.json`` rows (``../shared/RESULTS.md``) on the population's new users: ``win_rate[@k]`` (subset
    ``generated``), ``judge_agreement[@k]`` (the transfer share) and ``accuracy[@k]`` on the held-out bank pairs
    (subset ``bank``) per ranking; the judge's ``accuracy/<attribute>`` on the held-out bank (split
    ``judge-validation``, one fit)."""
    config = result["config"]
    dataset, seeds = config["pref"]["dataset"], list(config["pref"]["seeds"])
    rows = []
    for key, subset, metric in (("cells", "generated", "win_rate"), ("transfer", "generated", "judge_agreement"),
                                ("bank_accuracy", "bank", "accuracy")):  # fmt: skip
        for method, by_k in result[key].items():
            for k, cell in _by_answers(by_k):
                if cell is not None:
                    rows.append({"dataset": dataset, "split": "test_new_users", "subset": subset, "method": method,
                                 "metric": _metric(metric, k), **cell, "seeds": seeds})  # fmt: skip
    for attribute, cell in result["judge_accuracy"].items():
        rows.append({"dataset": dataset, "split": "judge-validation", "subset": "all", "method": "style-judge",
                     "metric": f"accuracy/{attribute}", **cell, "seeds": [config["judge_fit_bank"]]})  # fmt: skip
    return rows


JUDGE_BAR, ROOM_BAR = 0.75, 0.60
"""Sanity bars: the judge's accuracy on held-out bank responses, per attribute; the lower bound of the judge's best
sample's win rate (the samples differ enough, for these users, to leave something to choose)."""


def generated_bars(result: dict) -> list[dict]:
    """The checks that must hold before the rankings are compared: the judge reads every attribute of held-out
    bank responses; PReF, after the most answers, knows the new users on the bank (its held-out accuracy clearly
    above the single BT model's: intervals disjoint); the judge's best sample clearly beats a random one."""
    worst = min(result["judge_accuracy"].items(), key=lambda item: item[1]["mean"])
    k = max(result["bank_accuracy"][PREF], key=int)
    pref, bt = result["bank_accuracy"][PREF][k], result["bank_accuracy"][SINGLE_BT]["-"]
    room = result["cells"][JUDGE_BEST]["-"]
    return [
        {"bar": f"the judge scores >= {100 * JUDGE_BAR:.0f}% of held-out bank responses right on every attribute "
                f"(lowest: {worst[0]})", "value": worst[1]["mean"], "holds": worst[1]["mean"] >= JUDGE_BAR},
        {"bar": f"PReF after {k} answers ranks the new users' held-out bank pairs clearly above the single BT "
                "model (intervals disjoint)", "value": pref["mean"], "holds": pref["ci_low"] > bt["ci_high"]},
        {"bar": f"the judge's best sample beats a random one: lower bound >= {100 * ROOM_BAR:.0f}%",
         "value": room["mean"], "holds": room["ci_low"] >= ROOM_BAR},
    ]  # fmt: skip


def _pct(cell: dict) -> str:
    return f"{100 * cell['mean']:.1f}% [{100 * cell['ci_low']:.1f}, {100 * cell['ci_high']:.1f}]"


def generated_note(result: dict) -> str:
    """What the run shows, in sentences read from ``result``: the bars, PReF's win rate after each number of
    answers against 50% and beside the paper's, the single BT model, the paired difference, and the transfer."""
    bars = generated_bars(result)
    failing = [b["bar"] for b in bars if not b["holds"]]
    lines = [f"Sanity bars: {len(bars) - len(failing)} of {len(bars)} hold."]
    if failing:
        lines[0] += " Failing: " + "; ".join(failing) + ". The comparison below is read with that in mind."
    for k, cell in _by_answers(result["cells"][PREF]):
        side = "above" if cell["ci_low"] > 0.5 else "below" if cell["ci_high"] < 0.5 else "no different from"
        reported = "" if cell["reported"] is None else f" (the paper reports {100 * cell['reported']:.1f}%)"
        lines.append(f"- PReF after {k} answers: {_pct(cell)}, {side} a random sample{reported}.")
    true = _by_answers(result["cells"].get(TRUE_PHI, {}))
    if true:
        k, cell = true[-1]
        lines.append(
            f"- Lambda on the true attributes (the same answers, a phi that reads the judged attributes): {_pct(cell)}"
            f" after {k} answers: what a phi that transfers to generated text would give."
        )
    bt, best = result["cells"][SINGLE_BT]["-"], result["cells"][JUDGE_BEST]["-"]
    lines.append(f"- Single BT: {_pct(bt)} (the paper reports {100 * REPORTED_WIN_RATE[SINGLE_BT]:.1f}%); the "
                 f"judge's best sample: {_pct(best)}.")  # fmt: skip
    diff = result["difference"]
    verdict = ("PReF picks better samples than the single BT model" if diff["ci_low"] > 0 else
               "the single BT model picks better samples" if diff["ci_high"] < 0 else "no difference")  # fmt: skip
    lines.append(f"- {diff['name']}: {100 * diff['mean']:+.1f} points [{100 * diff['ci_low']:+.1f}, "
                 f"{100 * diff['ci_high']:+.1f}]: {verdict}.")  # fmt: skip
    k = max(result["transfer"][PREF], key=int)
    agree = result["transfer"][PREF][k]
    if agree is not None:
        lines.append(f"- Transfer: after {k} answers, lambda . phi orders {_pct(agree)} of a prompt's sample pairs "
                     "as the judge does (50% is chance).")  # fmt: skip
        bank = result["bank_accuracy"][PREF][k]
        if agree["ci_low"] <= 0.5 <= agree["ci_high"] and bank["ci_low"] > 0.5:
            lines.append(
                f"- So PReF knows these users where its features were fitted ({_pct(bank)} of their held-out bank "
                "pairs right) but its phi, fitted on the bank's templated responses, does not carry over to this "
                "generator's text: it orders the samples no better than chance."
            )
    return "\n".join(lines)


def win_rate_table(result: dict) -> list[dict]:
    """The page's win-rate table: one row per ranking and number of answers, with the paper's value beside it."""
    from plus.evaluation import format_interval

    return [
        {"ranking": LABELS[name], "answers": k, "win rate (%)": format_interval(cell),
         "reported (%)": "" if cell["reported"] is None else f"{100 * cell['reported']:.1f}", "n": cell["n"]}
        for name in (PREF, TRUE_PHI, SINGLE_BT, JUDGE_BEST) for k, cell in _by_answers(result["cells"][name])
    ]  # fmt: skip


def api_check(
    config: GeneratedConfig, result: dict, samples: dict, judge, num_items: int = 40, post=None
) -> dict[str, float | int]:
    """The optional LLM verdict (`plus.api_judge.judge_pair`, both orders) on the first ``num_items`` (user,
    prompt) items of the first seed: PReF's pick after the most answers against one random other sample, given
    the user's description. Returns the win rate with its 95% interval over items, and how often the LLM's
    outcome equals the style judge's on the same pairs: ``{"mean", "ci_low", "ci_high", "n", "agreement"}``."""
    from plus.api_judge import judge_pair
    from plus.judge import pairwise_outcome, style_utility

    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"api_check needs a positive number of items, got {num_items!r}")
    style = StyleJudge(**result["judge"])
    texts = samples["samples"][str(config.seeds[0])]
    prompts = [question for question, _ in TOPICS[: config.num_prompts]]
    rng = random.Random("api-check")
    llm, agree = [], []
    items = [(pick, b) for pick in result["picks"] for b in range(config.num_prompts)][:num_items]
    for pick, b in tqdm(items, desc="API judge (items)"):
        mine = pick["picked"][b]
        other = rng.choice([j for j in range(config.num_candidates) if j != mine])
        outcome = judge_pair(judge, pick["description"], prompts[b], texts[b][mine], texts[b][other], post)
        exact = pairwise_outcome(*(style_utility(texts[b][j], pick["profile"], style) for j in (mine, other)))
        llm.append(outcome)
        agree.append(float(outcome == exact))
    cell = _cell([llm])
    return {"mean": cell["mean"], "ci_low": cell["ci_low"], "ci_high": cell["ci_high"], "n": len(llm),
            "agreement": sum(agree) / len(agree)}  # fmt: skip
