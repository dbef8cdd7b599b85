"""Zero-shot personalized generation on Pets: does a user summary in a generator's instructions make its answers
better for that user? (The PLUS paper: summary-conditioned GPT-4o answers win 72% against default GPT-4o.)

For each held-out Pets context, the generator answers `plus.data.pets.PETS_PROMPT` once with a summary in its
instructions and once without (the default answer), and the user's ground truth judges the two
(`plus.generation.pets_outcomes`: the utility of the animal each answer is about; ties count half). The summaries
(`CONDITIONS`):

- ``default-resample``: no summary, a second default sample (the control: its win rate must be 50%);
- ``oracle``: the user's true description (``ground_truth["description"]``, as the Oracle reward model reads it);
- ``ideal-summary``: the one fact a Pets summary needs, in the summarizer's own form ("... about dogs.",
  `plus.data.pets.ideal_summary`): whether this generator follows a summary at all;
- ``plus-untrained`` / ``plus``: the summaries notebook 04's runs wrote for the same contexts (`loop_summaries`).

`run_personalization` generates (resuming from ``generations.json``), judges and returns per condition the win rate
with a 95% interval over generation seeds and contexts (`plus.judge.win_rate`) and what the answers are about;
`personalization_rows` gives the ``table.json`` rows, `personalization_bars` the sanity bars.

Departures from the paper's experiment (GPT-4o answers conditioned on PLUS summaries, judged by GPT-4o):

- the generator is the profile's summarizer model (SmolLM2-135M-Instruct at cpu), not GPT-4o: no API is used;
- the users are synthetic Pets users and the judge is their ground truth (the utility of the animal an answer
  is about, `plus.judge`), not an LLM judge of real users' preferences;
- one prompt (`plus.data.pets.PETS_PROMPT`) and one sampled answer per context and seed, against one default
  answer drawn with the same seed; ties (the same animal, or no single animal) count half.
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
from plus.generation import generate_responses, pets_outcomes
from plus.judge import pets_subject, win_rate

CONDITIONS = ("default-resample", "oracle", "ideal-summary", "plus-untrained", "plus")
"""The summaries compared with the default answer, in the order the page shows them."""
CONDITION_LABELS = {
    "default-resample": "a second default answer (control)",
    "oracle": "the true description",
    "ideal-summary": "the ideal one-fact summary",
    "plus-untrained": "PLUS-untrained summaries",
    "plus": "PLUS summaries",
}
LOOP_CONDITIONS = ("plus-untrained", "plus")
"""The conditions whose summaries come from notebook 04's runs (`loop_summaries`)."""
REPORTED_WIN_RATE = 0.72
"""The PLUS paper's zero-shot personalization win rate (GPT-4o generator and judge, against default GPT-4o;
REFERENCE.md 2.2, *reported*): another generator and other users, so no cell of ours is the same cell."""
COMPARED = (("plus", "plus-untrained"), ("ideal-summary", "plus"), ("oracle", "ideal-summary"))
"""Pairs of conditions whose win rates are compared, per context and seed (the first minus the second)."""
RESAMPLE_SEED = 1000
"""Added to a generation seed for the control's second default sample."""


@dataclass(frozen=True)
class PersonalizeConfig:
    """One profile's zero-shot personalization run."""

    generator: str
    """A causal chat LM `plus.models` loads (the profile's summarizer model)."""
    dataset: str = "pets-ood"
    split: str = "test"
    num_records: int = 352
    """Held-out contexts (the first ones of ``split`` in notebook 04's held-out records)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Generation seeds (the summaries are fixed: notebook 04's runs of training seed 0)."""
    max_new_tokens: int = 40
    temperature: float = 0.7
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("num_records", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PersonalizeConfig.{name} must be a positive integer, got {value!r}")
        if not self.seeds:
            raise ValueError("PersonalizeConfig needs at least one seed")
        if not self.temperature > 0:
            raise ValueError(f"PersonalizeConfig.temperature must be positive, got {self.temperature!r}")


def personalize_config(profile_name: str, **changes) -> PersonalizeConfig:
    """The profile's run (`plus.config.PROFILES`): its summarizer model as generator; smoke: 4 contexts, one seed,
    8 new tokens."""
    from plus.config import get_profile

    profile = get_profile(profile_name)
    config = PersonalizeConfig(generator=profile.summarizer_model)
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


def condition_summaries(records: Sequence[dict], loop: dict[str, Sequence[str]]) -> dict[str, list[str | None]]:
    """Per condition of `CONDITIONS` (those of `LOOP_CONDITIONS` only when ``loop`` has them), the summary each
    record's answer is conditioned on (None: no summary). An empty loop summary is an error naming the record."""
    for index, record in enumerate(records):
        if not (record.get("ground_truth") or {}).get("profile"):
            raise ValueError(f"record {index} ({record.get('user_id')!r}) has no ground_truth.profile")
    out: dict[str, list[str | None]] = {
        "default-resample": [None] * len(records),
        "oracle": [r["ground_truth"]["description"] for r in records],
        "ideal-summary": [ideal_summary(r["ground_truth"]["profile"]) for r in records],
    }
    for name in LOOP_CONDITIONS:
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


def _subjects(records: Sequence[dict], answers: Sequence[str]) -> Counter:
    """How many answers are about the user's own contested animal, the other one, another animal, or none."""
    counts: Counter = Counter()
    for record, answer in zip(records, answers, strict=True):
        own, other = contested_animals(record["ground_truth"]["profile"])
        subject = pets_subject(answer)
        counts["none" if subject is None else {own: "own", other: "other"}.get(subject, "another")] += 1
    return counts


def run_personalization(
    config: PersonalizeConfig, records: Sequence[dict], loop: dict[str, Sequence[str]], output_dir: str | Path
) -> dict:
    """Generate every condition's answers and the default ones for each seed, judge them, and return
    ``{"config", "conditions": {name: {"win_rate", "ci_low", "ci_high", "ties", "n", "subjects"}},
    "differences", "default_subjects", "examples", "seconds", "generation_seconds"}`` (``seconds``: this call;
    ``generation_seconds``: the generation of every answer, as measured when it ran); ``differences`` holds the
    paired win-rate differences of `COMPARED` (same contexts, same seeds) with their 95% intervals. Answers are kept in
    ``output_dir/generations.json`` after each (condition, seed), so a stopped run resumes; a file written under
    another config is set aside, not used."""
    import time

    from plus.models import load_causal_lm

    summaries = condition_summaries(records, loop)
    path = Path(output_dir) / "generations.json"
    key = {"config": asdict(config), "records": [r["user_id"] for r in records]}
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
                model, tokenizer, [PETS_PROMPT] * len(records), texts, max_new_tokens=config.max_new_tokens,
                temperature=config.temperature, batch_size=config.batch_size,
                seed=seed + (RESAMPLE_SEED if name == "default-resample" else 0),
            )  # fmt: skip
            seconds.setdefault(name, {})[str(seed)] = time.perf_counter() - start
            write_json(path, {"key": key, "summaries": summaries, "answers": answers, "seconds": seconds})
    conditions, outcomes, total = {}, {}, len(records) * len(config.seeds)
    for name in summaries:
        outcomes[name] = [
            pets_outcomes(records, answers[name][str(s)], answers["default"][str(s)]) for s in config.seeds
        ]
        rate = win_rate(outcomes[name])
        subjects = sum((_subjects(records, answers[name][str(s)]) for s in config.seeds), Counter())
        conditions[name] = {
            "win_rate": rate["mean"], "ci_low": rate["ci_low"], "ci_high": rate["ci_high"], "ties": rate["ties"],
            "n": rate["n"], "subjects": {k: subjects[k] / total for k in ("own", "other", "another", "none")},
        }  # fmt: skip
    differences = {}
    for better, worse in COMPARED:
        if better in summaries and worse in summaries:
            paired = [[a - b for a, b in zip(outcomes[better][k], outcomes[worse][k], strict=True)]
                      for k in range(len(config.seeds))]  # fmt: skip
            low, high = bootstrap_interval(paired)
            mean = sum(map(sum, paired)) / total
            differences[f"{better} - {worse}"] = {"mean": mean, "ci_low": low, "ci_high": high}
    default = sum((_subjects(records, answers["default"][str(s)]) for s in config.seeds), Counter())
    first = str(config.seeds[0])
    examples = [
        {"user": r["user_id"], "condition": name, "summary": summaries[name][i] or "(none)",
         "answer": answers[name][first][i], "default answer": answers["default"][first][i]}
        for name in summaries for i, r in enumerate(records[:2])
    ]  # fmt: skip
    return {
        "config": asdict(config),
        "conditions": conditions,
        "differences": differences,
        "default_subjects": {k: default[k] / total for k in ("own", "other", "another", "none")},
        "examples": examples,
        "seconds": time.perf_counter() - began,
        "generation_seconds": sum(t for by_seed in seconds.values() for t in by_seed.values()),
    }


def personalization_rows(result: dict) -> list[dict]:
    """The ``table.json`` rows (``../shared/RESULTS.md``): one ``win_rate`` row per condition."""
    config = result["config"]
    return [
        {"dataset": config["dataset"], "split": config["split"], "subset": "all", "method": name,
         "metric": "win_rate", "mean": cell["win_rate"], "ci_low": cell["ci_low"], "ci_high": cell["ci_high"],
         "n": cell["n"], "seeds": list(config["seeds"]), "reported": None}
        for name, cell in result["conditions"].items()
    ]  # fmt: skip


def personalization_bars(result: dict) -> list[dict]:
    """The checks that must hold before the summaries are compared: the control's interval holds 50% (the judge
    and the pairing are unbiased), and the ideal summary's lies above 50% (this generator follows a summary)."""
    cells = result["conditions"]
    control, ideal = cells["default-resample"], cells["ideal-summary"]
    return [
        {"bar": "a second default answer wins 50% against the default (95% interval holds 0.5)",
         "value": control["win_rate"], "holds": control["ci_low"] <= 0.5 <= control["ci_high"]},
        {"bar": "the ideal one-fact summary wins above 50% (95% interval above 0.5)",
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
    bars = personalization_bars(result)
    held = [b for b in bars if b["holds"]]
    lines.append(f"Sanity bars: {len(held)} of {len(bars)} hold" + (
        "." if len(held) == len(bars) else
        " (" + "; ".join(f"fails: {b['bar']}" for b in bars if not b["holds"]) + "), so the comparison below does "
        "not mean what it would otherwise."))  # fmt: skip
    for name, cell in cells.items():
        shown = format_interval({"mean": cell["win_rate"], "ci_low": cell["ci_low"], "ci_high": cell["ci_high"]})
        lines.append(f"- {CONDITION_LABELS[name]}: win rate {shown} against the default answer, "
                     f"{_verdict(cell, 0.5)} 50%; {100 * cell['subjects']['own']:.0f}% of its answers are about the "
                     f"user's own contested animal (default answers: "
                     f"{100 * result['default_subjects']['own']:.0f}%).")  # fmt: skip
    for key, cell in result.get("differences", {}).items():
        better, worse = key.split(" - ")
        verdict = _verdict(cell, 0.0)
        said = {"above": "higher than", "below": "lower than", "no different from": "no different from"}[verdict]
        lines.append(f"- {CONDITION_LABELS[better]} minus {CONDITION_LABELS[worse]}, per context and seed: "
                     f"{format_interval(cell)} points: {said} it.")  # fmt: skip
    if "plus" in cells:
        lines.append(f"The PLUS paper reports a {100 * REPORTED_WIN_RATE:.0f}% win rate (*reported*) for GPT-4o "
                     "conditioned on PLUS summaries against default GPT-4o, judged by GPT-4o, on other users: "
                     "beside it, not the same cell.")  # fmt: skip
    return "\n".join(lines)
