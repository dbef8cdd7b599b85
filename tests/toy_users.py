"""Toy users whose preferences are known by construction, shared by the reward-model tests.

Two users: one prefers dogs to cats, the other cats to dogs (contested pairs); both prefer fish to a rock
(agreed pairs). Responses come in a few wordings, so a model must read the pet, not memorise a string.
"""

import random

import torch
from torch import nn

from plus.judge import pets_animals, pets_subject

PROMPT = "Which pet?"
PETS = {
    "dog": ["Dogs.", "A dog!", "Get a dog."],
    "cat": ["Cats.", "A cat!", "Get a cat."],
    "fish": ["Fish.", "A fish!", "Get a fish."],
    "rock": ["Rocks.", "A rock!", "Get a rock."],
}
LIKES = {"dog-lover": ["dog", "cat"], "cat-lover": ["cat", "dog"]}  # best first; both prefer fish over a rock


def toy_record(user: str, rng: random.Random, contested: bool, split: str = "train") -> dict:
    """A toy user who prefers one pet; contested pairs pit dog against cat, agreed pairs fish against a rock."""
    best, worst = LIKES[user]

    def pair(a: str, b: str) -> dict:
        return {"prompt": PROMPT, "chosen": rng.choice(PETS[a]), "rejected": rng.choice(PETS[b])}

    context = [pair(best, worst), pair("fish", "rock")]
    target = pair(best, worst) if contested else pair("fish", "rock")
    return {
        "context": f"{best} > {worst}; fish > rock",
        "context_pairs": context,
        "train_prompt": target["prompt"],
        "train_chosen": target["chosen"],
        "train_rejected": target["rejected"],
        "eval_prompt": target["prompt"],
        "eval_chosen": target["chosen"],
        "eval_rejected": target["rejected"],
        "user_id": user,
        "split": split,
        "ground_truth": {"profile": {}, "description": f"Loves {best}s."},
        "contested": contested,
    }


def toy_records(num: int, seed: int, split: str = "train") -> list[dict]:
    rng = random.Random(seed)
    return [toy_record(list(LIKES)[i % 2], rng, contested=(i // 2) % 2 == 0, split=split) for i in range(num)]


def mirrored_test_records() -> list[dict]:
    """Every contested pair once for each user (so a user-blind model gets exactly half right)."""
    records = []
    for i, (dog, cat) in enumerate(zip(PETS["dog"], PETS["cat"], strict=True)):
        for user in LIKES:
            record = toy_record(user, random.Random(i), contested=True, split="test")
            chosen, rejected = (dog, cat) if user == "dog-lover" else (cat, dog)
            record.update(eval_chosen=chosen, eval_rejected=rejected)
            records.append(record)
        records.append(toy_record("dog-lover", random.Random(i), contested=False, split="test"))
    return records


class KeywordRewardModel(nn.Module):
    """Reads the summary when ``reads``: +1 for a response about the animal the summary names first, else 0;
    a bias of 0.5 toward dogs either way, so a model that ignores the summary always prefers the dog."""

    def __init__(self, reads: bool) -> None:
        super().__init__()
        self.reads = reads
        self.bias = nn.Parameter(torch.zeros(()))

    def score(self, summaries, prompts, responses):
        out = []
        for summary, response in zip(summaries, responses, strict=True):
            named = sorted(pets_animals(summary or ""), key=lambda a: (summary or "").lower().find(a))
            about = pets_subject(response)
            out.append((1.0 if self.reads and named and about == named[0] else 0.0) + (0.5 if about == "dog" else 0))
        return torch.tensor(out) + self.bias


class StyleKeywordRewardModel(nn.Module):
    """A style user's toy reward model: when ``reads``, the style judge's score of the response on the attribute
    of each pole the summary names (`plus.judge.style_poles`), signed by the pole (verbose +, concise -); a bias
    toward longer responses either way, so a model that ignores the summary ranks every pair the same under any
    summary."""

    def __init__(self, reads: bool) -> None:
        super().__init__()
        self.reads = reads
        self.bias = nn.Parameter(torch.zeros(()))

    def score(self, summaries, prompts, responses):
        from plus.data.attributes import pole_profile
        from plus.judge import StyleJudge, style_poles, style_utility

        judge = StyleJudge(25, 41)
        out = []
        for summary, response in zip(summaries, responses, strict=True):
            named = style_poles(summary or "") if self.reads else set()
            value = sum(style_utility(response, pole_profile(pole), judge) for pole in named)
            out.append(value + 1e-3 * len(response))
        return torch.tensor(out) + self.bias
