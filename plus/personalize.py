"""Zero-shot personalized generation: does a user summary in a generator's instructions make its answers better for
that user? (The PLUS paper: summary-conditioned GPT-4o answers win 72% against default GPT-4o.) Two populations of
synthetic users whose preferences are known, so their ground truth judges the answers: Pets (``pets-ood``) and a
style population (``uf-p-4-synthetic``, `STYLE_DATASET`).

**Pets.** For each held-out Pets context, the generator answers `plus.data.pets.PETS_PROMPT` once with a summary in its
instructions and once without (the default answer), and the user's ground truth judges the two
(`plus.generation.pets_outcomes`: the utility of the animal each answer is about; ties count half). The summaries
(`CONDITIONS`):

- ``default-resample``: no summary, a second default sample (the control: its win rate must be 50%);
- ``oracle``: the user's true description (``ground_truth["description"]``, as the Oracle reward model reads it);
- ``ideal-summary``: the one fact a Pets summary needs, in the summarizer's own form ("... about dogs.",
  `plus.data.pets.ideal_summary`): whether this generator follows a summary at all;
- ``plus-untrained`` / ``plus``: the summaries notebook 04's runs wrote for the same contexts (`loop_summaries`).

**Style population.** The UF-P-4-like users of the flexible-context experiment (`plus.flexible_contexts`: each
values one attribute pole, verbose, formal, polite or confident), its held-out ``test`` records (all four users
taking turns) and the same cpu sizes. Each record's answer is to one of the population's held-out prompts (those of
``test_new_prompts``, in turn), and the user's utility for an answer is the profile-weighted sum of the style
judge's attribute scores of it (`plus.judge.style_utility`, fitted and validated on the response bank:
`plus.judge.fit_bank_judge`); equal utilities tie. The summaries (`STYLE_CONDITIONS`): the control and the true
description as for Pets (a UF-P-4 user's description is already the one fact it needs, so there is no separate
ideal summary), and PLUS-untrained's summaries of the record's user guide and of its unlabelled past conversations,
read from the flexible-context experiment's summary cache (`style_summaries`). No PLUS (trained) run exists on this
population at the cpu profile (one co-adaptation run is about an hour there), so it has no row.

`run_personalization` generates (resuming from ``generations.json``), judges and returns per condition the win rate
with a 95% interval over generation seeds and contexts (`plus.judge.win_rate`) and what the answers are about (Pets:
which animal; styles: whether the judge scores the user's attribute at the user's pole); `personalization_rows`
gives the ``table.json`` rows, `personalization_bars` the sanity bars.

Departures from the paper's experiment (GPT-4o answers conditioned on PLUS summaries, judged by GPT-4o):

- the generator is the profile's summarizer model (SmolLM2-135M-Instruct at cpu), not GPT-4o: no API is used;
- the users are synthetic (Pets, UF-P-4-like) and the judge is their ground truth (the utility of the animal an
  answer is about; the style judge's attribute scores, cue words and lengths validated on the response bank, not on
  free text, `plus.judge`), not an LLM judge of real users' preferences;
- Pets: one prompt (`plus.data.pets.PETS_PROMPT`); styles: the held-out topic prompts in turn; one sampled answer
  per context and seed, against one default answer drawn with the same seed; ties count half;
- styles: the summaries are PLUS-untrained's (frozen SmolLM2) of user guides and past conversations, not PLUS's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from plus.artifacts import as_read_back, read_json, write_json
from plus.data.pets import PETS_PROMPT, contested_animals, ideal_summary
from plus.evaluation import bootstrap_interval, format_interval
from plus.generation import generate_responses, pets_outcomes, style_outcomes
from plus.judge import fit_bank_judge, pets_subject, style_scores, win_rate

PETS_DATASET, STYLE_DATASET = "pets-ood", "uf-p-4-synthetic"
CONDITIONS = ("default-resample", "oracle", "ideal-summary", "plus-untrained", "plus")
"""The summaries compared with the default answer on Pets, in the order the page shows them."""
STYLE_CONDITIONS = ("default-resample", "oracle", "plus-untrained-guide", "plus-untrained-conversations")
"""The summaries compared with the default answer on the style population, in the order the page shows them."""
CONDITION_LABELS = {
    "default-resample": "a second default answer (control)",
    "oracle": "the true description",
    "ideal-summary": "the ideal one-fact summary",
    "plus-untrained": "PLUS-untrained summaries",
    "plus": "PLUS summaries",
    "plus-untrained-guide": "PLUS-untrained summaries of a user guide",
    "plus-untrained-conversations": "PLUS-untrained summaries of past conversations",
}
LOOP_CONDITIONS = ("plus-untrained", "plus")
"""The Pets conditions whose summaries come from notebook 04's runs (`loop_summaries`)."""
STYLE_KINDS = {"plus-untrained-guide": "user guide", "plus-untrained-conversations": "conversations"}
"""The style conditions whose summaries come from the flexible-context experiment, and the context kind each
summarizes (`plus.flexible_contexts.CONTEXT_KINDS`)."""
READ_CONDITIONS = {PETS_DATASET: LOOP_CONDITIONS, STYLE_DATASET: tuple(STYLE_KINDS)}
"""Per population, the conditions whose summaries a run reads from elsewhere (the others follow from the record)."""
FOLLOWS = {PETS_DATASET: "ideal-summary", STYLE_DATASET: "oracle"}
"""Per population, the condition that shows whether the generator follows a summary at all (a sanity bar)."""
SUBJECTS = {
    PETS_DATASET: {"own": "the user's own contested animal", "other": "the other contested animal",
                   "another": "another animal", "none": "no single animal"},
    STYLE_DATASET: {"pole": "the user's own pole", "neutral": "neither pole", "opposite": "the opposite pole"},
}  # fmt: skip
"""Per population, what an answer can be about (Pets: its animal; styles: where the judge scores the user's
attribute), keys in the order the page shows them."""
REPORTED_WIN_RATE = 0.72
"""The PLUS paper's zero-shot personalization win rate (GPT-4o generator and judge, against default GPT-4o;
REFERENCE.md 2.2, *reported*): another generator and other users, so no cell of ours is the same cell."""
COMPARED = {
    PETS_DATASET: (("plus", "plus-untrained"), ("ideal-summary", "plus"), ("oracle", "ideal-summary")),
    STYLE_DATASET: (("plus-untrained-guide", "plus-untrained-conversations"), ("oracle", "plus-untrained-guide")),
}
"""Per population, pairs of conditions whose win rates are compared, per context and seed (first minus second)."""
RESAMPLE_SEED = 1000
"""Added to a generation seed for the control's second default sample."""


@dataclass(frozen=True)
class PersonalizeConfig:
    """One profile's zero-shot personalization run."""

    generator: str
    """A causal chat LM `plus.models` loads (the profile's summarizer model)."""
    dataset: str = PETS_DATASET
    """The population: `PETS_DATASET` or `STYLE_DATASET`."""
    split: str = "test"
    num_records: int = 352
    """Held-out contexts (Pets: the first ones of ``split`` in notebook 04's held-out records; styles: of the
    flexible-context experiment's ``split``)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Generation seeds (the summaries are fixed: notebook 04's runs of training seed 0)."""
    max_new_tokens: int = 40
    temperature: float = 0.7
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.dataset not in READ_CONDITIONS:
            raise ValueError(f"PersonalizeConfig.dataset must be one of {sorted(READ_CONDITIONS)}, got "
                             f"{self.dataset!r}")  # fmt: skip
        for name in ("num_records", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PersonalizeConfig.{name} must be a positive integer, got {value!r}")
        if not self.seeds:
            raise ValueError("PersonalizeConfig needs at least one seed")
        if not self.temperature > 0:
            raise ValueError(f"PersonalizeConfig.temperature must be positive, got {self.temperature!r}")


def personalize_config(profile_name: str, dataset: str = PETS_DATASET, **changes) -> PersonalizeConfig:
    """The profile's run on ``dataset`` (`plus.config.PROFILES`): its summarizer model as generator; styles: the
    flexible-context experiment's 200 test records at cpu and 64 new tokens (room for the judge's verbose cut, 41
    words of content); smoke: 4 contexts, one seed, 8 new tokens."""
    from plus.config import get_profile

    profile = get_profile(profile_name)
    config = PersonalizeConfig(generator=profile.summarizer_model, dataset=dataset)
    if dataset == STYLE_DATASET:
        config = replace(config, num_records=200, max_new_tokens=64)
    if profile.name == "smoke":
        config = replace(config, num_records=4, seeds=(0,), max_new_tokens=8, batch_size=4)
    return replace(config, **changes)


def heldout_summaries(
    profile_name: str, runs_dir: str | Path, dataset: str, variants: Sequence[str], seed: int = 0
) -> tuple[list[dict], dict[str, list[str]], list[str]]:
    """Notebook 04's held-out records of ``dataset`` at ``profile_name``, the summaries its runs of training seed
    ``seed`` wrote for them (each of ``variants`` found in ``runs_dir`` for this very run:
    `plus.coadapt.experiment.Ablation.evaluation`), and the variants not found."""
    from plus.coadapt.experiment import Ablation, ablation_settings

    ablation = Ablation(ablation_settings(profile_name), Path(runs_dir))
    heldout = ablation.split(dataset, train=False)
    found, missing = {}, []
    for variant in variants:
        payload = ablation.evaluation(dataset, variant, seed)
        if payload is None or not payload.get("summaries"):
            missing.append(variant)
            continue
        if len(payload["summaries"]) != len(heldout):
            raise ValueError(
                f"{runs_dir}/{dataset}/{variant}/seed-{seed}/eval.json: {len(payload['summaries'])} summaries "
                f"for {len(heldout)} held-out records"
            )
        found[variant] = list(payload["summaries"])
    return heldout, found, missing


def loop_summaries(
    profile_name: str, runs_dir: str | Path, config: PersonalizeConfig, seed: int = 0
) -> tuple[list[dict], dict[str, list[str]], list[str]]:
    """Notebook 04's held-out records of ``config.split`` (the first ``num_records``), the summaries its runs of
    training seed ``seed`` wrote for them (`LOOP_CONDITIONS`, `heldout_summaries`), and the conditions not found."""
    heldout, found, missing = heldout_summaries(profile_name, runs_dir, config.dataset, LOOP_CONDITIONS, seed)
    rows = [i for i, r in enumerate(heldout) if r["split"] == config.split][: config.num_records]
    if len(rows) < config.num_records:
        raise ValueError(
            f"{config.dataset} has {len(rows)} held-out {config.split!r} records at the {profile_name} profile, "
            f"fewer than num_records={config.num_records}"
        )
    return [heldout[i] for i in rows], {v: [texts[i] for i in rows] for v, texts in found.items()}, missing


def condition_summaries(
    records: Sequence[dict], loop: dict[str, Sequence[str]], dataset: str = PETS_DATASET
) -> dict[str, list[str | None]]:
    """Per condition of the population's (`CONDITIONS` for Pets, `STYLE_CONDITIONS` for styles; those of
    `READ_CONDITIONS` only when ``loop`` has them), the summary each record's answer is conditioned on (None: no
    summary). An empty summary read from elsewhere is an error naming the record."""
    for index, record in enumerate(records):
        if not (record.get("ground_truth") or {}).get("profile"):
            raise ValueError(f"record {index} ({record.get('user_id')!r}) has no ground_truth.profile")
    out: dict[str, list[str | None]] = {
        "default-resample": [None] * len(records),
        "oracle": [r["ground_truth"]["description"] for r in records],
    }
    if dataset == PETS_DATASET:
        out["ideal-summary"] = [ideal_summary(r["ground_truth"]["profile"]) for r in records]
    unknown = sorted(set(loop) - set(READ_CONDITIONS[dataset]))
    if unknown:
        raise ValueError(f"{dataset} has no condition {unknown}; it reads {list(READ_CONDITIONS[dataset])}")
    for name in READ_CONDITIONS[dataset]:
        if name not in loop:
            continue
        texts = list(loop[name])
        if len(texts) != len(records):
            raise ValueError(f"{name}: {len(texts)} summaries for {len(records)} records")
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{name}: the summary of record {index} ({records[index].get('user_id')!r}) is empty")
        out[name] = texts
    return out


def style_summaries(
    profile_name: str, config: PersonalizeConfig, cache_path: str | Path
) -> tuple[list[dict], list[str], dict[str, list[str]]]:
    """The style population's first ``config.num_records`` records of ``config.split`` as the flexible-context
    experiment builds them at ``profile_name`` (`plus.flexible_contexts.flexible_config`: its sizes and data seed;
    the labelled-pair set's records), the held-out prompt each one's answer is to (the ``test_new_prompts``
    prompts in turn), and per condition of `STYLE_KINDS` PLUS-untrained's summary of the record's context of that
    kind, read from the summary cache ``cache_path`` (`plus.baselines.plus_untrained_summaries`; summaries it
    lacks are made and appended there)."""
    from plus.baselines import plus_untrained_summaries
    from plus.data import build_dataset
    from plus.flexible_contexts import CONTEXT_KINDS, flexible_config

    flexible = flexible_config(profile_name)
    built = {kind: build_dataset(name, flexible.data_seed, num_train=flexible.num_train, num_test=flexible.num_test)
             for kind, name in CONTEXT_KINDS.items()}  # fmt: skip
    chosen = {kind: [r for r in rows if r["split"] == config.split][: config.num_records]
              for kind, rows in built.items()}  # fmt: skip
    records = chosen["labelled pairs"]
    if len(records) < config.num_records:
        raise ValueError(f"{STYLE_DATASET} has {len(records)} {config.split!r} records at the {profile_name} "
                         f"profile, fewer than num_records={config.num_records}")  # fmt: skip
    heldout = [r for r in built["labelled pairs"] if r["split"] == "test_new_prompts"]
    prompts = list(dict.fromkeys(r["eval_prompt"] for r in heldout))
    if not prompts:
        raise ValueError(f"{STYLE_DATASET} has no test_new_prompts records at the {profile_name} profile")
    summaries = {}
    for name, kind in STYLE_KINDS.items():
        rows = chosen[kind]
        for index, (mine, theirs) in enumerate(zip(records, rows, strict=True)):
            if (mine["user_id"], mine["eval_chosen"]) != (theirs["user_id"], theirs["eval_chosen"]):
                raise ValueError(f"{CONTEXT_KINDS[kind]} record {index} is not the labelled-pair set's record "
                                 f"{index} ({theirs['user_id']!r} vs {mine['user_id']!r})")  # fmt: skip
        by_context = plus_untrained_summaries(
            rows, flexible.summarizer_model, flexible.max_summary_tokens, cache_path, seed=flexible.data_seed,
            batch_size=flexible.summary_batch_size,
        )  # fmt: skip
        summaries[name] = [by_context[r["context"]] for r in rows]
    return records, [prompts[i % len(prompts)] for i in range(len(records))], summaries


def _subjects(dataset: str, records: Sequence[dict], answers: Sequence[str], judge=None) -> Counter:
    """Pets: how many answers are about the user's own contested animal, the other one, another animal, or none.
    Styles: how many the judge scores at the user's pole on every attribute the user weighs, at the opposite pole on
    one of them, or neither (an empty answer: neither)."""
    counts: Counter = Counter()
    for record, answer in zip(records, answers, strict=True):
        profile = record["ground_truth"]["profile"]
        if dataset == STYLE_DATASET:
            scores = style_scores(answer, judge) if answer.strip() else {}
            signs = [scores.get(a, 0) * (1 if w > 0 else -1) for a, w in profile.items() if w]
            counts["opposite" if min(signs) < 0 else "pole" if min(signs) > 0 else "neutral"] += 1
            continue
        own, other = contested_animals(profile)
        subject = pets_subject(answer)
        counts["none" if subject is None else {own: "own", other: "other"}.get(subject, "another")] += 1
    return counts


def run_personalization(
    config: PersonalizeConfig,
    records: Sequence[dict],
    loop: dict[str, Sequence[str]],
    output_dir: str | Path,
    prompts: Sequence[str] | None = None,
) -> dict:
    """Generate every condition's answers and the default ones for each seed, judge them, and return
    ``{"config", "conditions": {name: {"win_rate", "ci_low", "ci_high", "ties", "n", "subjects"}},
    "differences", "default_subjects", "examples", "seconds", "generation_seconds"}`` (``seconds``: this call;
    ``generation_seconds``: the generation of every answer, as measured when it ran), plus ``"judge"`` and
    ``"judge_accuracy"`` on the style population (`plus.judge.fit_bank_judge`); ``differences`` holds the paired
    win-rate differences of `COMPARED` (same contexts, same seeds) with their 95% intervals. ``loop``: the summaries
    read from elsewhere (`READ_CONDITIONS`); ``prompts``: the prompt each record's answer is to (None: Pets' one
    prompt; styles: `style_summaries`). Answers are kept in ``output_dir/generations.json`` after each (condition,
    seed), so a stopped run resumes; a file written under another config is set aside, not used."""
    import time

    from plus.models import load_causal_lm

    summaries = condition_summaries(records, loop, config.dataset)
    styles = config.dataset == STYLE_DATASET
    if styles and prompts is None:
        raise ValueError("the style population needs the prompt of every record (style_summaries gives them)")
    path = Path(output_dir) / "generations.json"
    key = {"config": asdict(config), "records": [r["user_id"] for r in records]}
    if prompts is not None:
        if len(prompts) != len(records):
            raise ValueError(f"{len(prompts)} prompts for {len(records)} records")
        key["prompts"] = list(prompts)
    stored = read_json(path) if path.exists() else None
    if stored is not None and (stored.get("key") != as_read_back(key) or stored.get("summaries") != summaries):
        path.rename(path.with_suffix(".json.stale"))  # another run's answers: kept aside, never mixed in
        stored = None
    answers: dict[str, dict[str, list[str]]] = (stored or {}).get("answers", {})
    seconds: dict[str, dict[str, float]] = (stored or {}).get("seconds", {})
    todo = [(name, seed) for name in ("default", *summaries) for seed in config.seeds if str(seed) not in
            answers.get(name, {})]  # fmt: skip
    began = time.perf_counter()
    if todo:
        model, tokenizer = load_causal_lm(config.generator)
        for name, seed in tqdm(todo, desc="answers (condition x seed)"):
            start = time.perf_counter()
            texts = [None] * len(records) if name == "default" else summaries[name]
            answers.setdefault(name, {})[str(seed)] = generate_responses(
                model, tokenizer, list(prompts or [PETS_PROMPT] * len(records)), texts,
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature, batch_size=config.batch_size,
                seed=seed + (RESAMPLE_SEED if name == "default-resample" else 0),
            )  # fmt: skip
            seconds.setdefault(name, {})[str(seed)] = time.perf_counter() - start
            write_json(path, {"key": key, "summaries": summaries, "answers": answers, "seconds": seconds})
    judge, accuracy = fit_bank_judge() if styles else (None, None)

    def judged(answered: Sequence[str], default: Sequence[str]) -> list[float]:
        if styles:
            return style_outcomes(records, answered, default, judge)
        return pets_outcomes(records, answered, default)

    def subjects_of(name: str) -> dict[str, float]:
        counts = sum((_subjects(config.dataset, records, answers[name][str(s)], judge) for s in config.seeds),
                     Counter())  # fmt: skip
        return {k: counts[k] / total for k in SUBJECTS[config.dataset]}

    conditions, outcomes, total = {}, {}, len(records) * len(config.seeds)
    for name in summaries:
        outcomes[name] = [judged(answers[name][str(s)], answers["default"][str(s)]) for s in config.seeds]
        rate = win_rate(outcomes[name])
        conditions[name] = {
            "win_rate": rate["mean"], "ci_low": rate["ci_low"], "ci_high": rate["ci_high"], "ties": rate["ties"],
            "n": rate["n"], "subjects": subjects_of(name),
        }  # fmt: skip
    differences = {}
    for better, worse in COMPARED[config.dataset]:
        if better in summaries and worse in summaries:
            paired = [[a - b for a, b in zip(outcomes[better][k], outcomes[worse][k], strict=True)]
                      for k in range(len(config.seeds))]  # fmt: skip
            low, high = bootstrap_interval(paired)
            mean = sum(map(sum, paired)) / total
            differences[f"{better} - {worse}"] = {"mean": mean, "ci_low": low, "ci_high": high}
    first = str(config.seeds[0])
    shown = records[: 4 if styles else 2]  # styles: one record of each of the four users
    examples = [
        {"user": r["user_id"], "condition": name, "summary": summaries[name][i] or "(none)",
         "answer": answers[name][first][i], "default answer": answers["default"][first][i]}
        for name in summaries for i, r in enumerate(shown)
    ]  # fmt: skip
    result = {
        "config": asdict(config),
        "conditions": conditions,
        "differences": differences,
        "default_subjects": subjects_of("default"),
        "examples": examples,
        "seconds": time.perf_counter() - began,
        "generation_seconds": sum(t for by_seed in seconds.values() for t in by_seed.values()),
    }
    if styles:
        result.update(judge=asdict(judge), judge_accuracy=accuracy, prompts=sorted(set(prompts)))
    return result


def personalization_rows(result: dict) -> list[dict]:
    """The ``table.json`` rows (``../shared/RESULTS.md``): one ``win_rate`` row per condition; on the style
    population also the judge's ``accuracy/<attribute>`` on the held-out response bank (split
    ``judge-validation``, method ``style-judge``, one fit)."""
    config = result["config"]
    rows = [
        {"dataset": config["dataset"], "split": config["split"], "subset": "all", "method": name,
         "metric": "win_rate", "mean": cell["win_rate"], "ci_low": cell["ci_low"], "ci_high": cell["ci_high"],
         "n": cell["n"], "seeds": list(config["seeds"]), "reported": None}
        for name, cell in result["conditions"].items()
    ]  # fmt: skip
    for attribute, cell in result.get("judge_accuracy", {}).items():
        rows.append({"dataset": config["dataset"], "split": "judge-validation", "subset": "all",
                     "method": "style-judge", "metric": f"accuracy/{attribute}", **cell, "seeds": [0]})  # fmt: skip
    return rows


def personalization_bars(result: dict) -> list[dict]:
    """The checks that must hold before the summaries are compared: the control's interval holds 50% (the judge
    and the pairing are unbiased), and the population's `FOLLOWS` condition (Pets: the ideal one-fact summary;
    styles: the true description, which is one fact) lies above 50% (this generator follows a summary)."""
    cells = result["conditions"]
    follows = FOLLOWS[result["config"]["dataset"]]
    control, ideal = cells["default-resample"], cells[follows]
    return [
        {"bar": "a second default answer wins 50% against the default (95% interval holds 0.5)",
         "value": control["win_rate"], "holds": control["ci_low"] <= 0.5 <= control["ci_high"]},
        {"bar": f"{CONDITION_LABELS[follows]} wins above 50% (95% interval above 0.5)",
         "value": ideal["win_rate"], "holds": ideal["ci_low"] > 0.5},
    ]  # fmt: skip


def _verdict(cell: dict, level: float) -> str:
    if cell["ci_low"] > level:
        return "above"
    return "below" if cell["ci_high"] < level else "no different from"


def personalization_note(result: dict) -> str:
    """What the run shows, in words, every figure read from ``result``: the sanity bars, each condition's win
    rate against the default answer, the paired differences, and the paper's reported number beside them."""
    cells, lines = result["conditions"], []
    dataset = result["config"]["dataset"]
    first_key = next(iter(SUBJECTS[dataset]))
    about = {PETS_DATASET: "are about", STYLE_DATASET: "are judged at"}[dataset]
    bars = personalization_bars(result)
    held = [b for b in bars if b["holds"]]
    lines.append(f"Sanity bars: {len(held)} of {len(bars)} hold" + (
        "." if len(held) == len(bars) else
        " (" + "; ".join(f"fails: {b['bar']}" for b in bars if not b["holds"]) + "), so the comparison below does "
        "not mean what it would otherwise."))  # fmt: skip
    for name, cell in cells.items():
        shown = format_interval({"mean": cell["win_rate"], "ci_low": cell["ci_low"], "ci_high": cell["ci_high"]})
        lines.append(f"- {CONDITION_LABELS[name]}: win rate {shown} against the default answer, "
                     f"{_verdict(cell, 0.5)} 50%; {100 * cell['subjects'][first_key]:.0f}% of its answers {about} "
                     f"{SUBJECTS[dataset][first_key]} (default answers: "
                     f"{100 * result['default_subjects'][first_key]:.0f}%).")  # fmt: skip
    for key, cell in result.get("differences", {}).items():
        better, worse = key.split(" - ")
        verdict = _verdict(cell, 0.0)
        said = {"above": "higher than", "below": "lower than", "no different from": "no different from"}[verdict]
        lines.append(f"- {CONDITION_LABELS[better]} minus {CONDITION_LABELS[worse]}, per context and seed: "
                     f"{format_interval(cell)} points: {said} it.")  # fmt: skip
    reported = (f"The PLUS paper reports a {100 * REPORTED_WIN_RATE:.0f}% win rate (*reported*) for GPT-4o "
                "conditioned on PLUS summaries against default GPT-4o, judged by GPT-4o, on other users")  # fmt: skip
    if "plus" in cells:
        lines.append(f"{reported}: beside it, not the same cell.")
    elif dataset == STYLE_DATASET:
        lines.append(f"{reported}; no PLUS (trained) summaries exist for this population here, so no row of ours "
                     "stands beside it.")  # fmt: skip
    return "\n".join(lines)
