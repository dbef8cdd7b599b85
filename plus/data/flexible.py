"""Flexible contexts for the UF-P-like synthetic users: the same users and target pairs as
`plus.data.attributes.build_attribute_users`, but the context is not labelled pairs.

- ``conversations``: ``num_conversations`` (3) unlabelled past conversations. In each, the user asks a prompt of
  the bank, the assistant's reply is the response the user liked best among ``num_candidates_seen`` (4) random
  candidates (by the user's true reward; ties by the seeded RNG), and the user closes with a neutral
  acknowledgement. No alternative and no rating is shown: the preference is only implicit in what the assistant
  said that the user kept, as in a chat log.
- ``user_guide``: a short first-person self-description ("user guide") written from a bank of phrasings per pole,
  worded differently from ``ground_truth["description"]`` so that it is a context, not the Oracle's text.

``context_pairs`` is empty and ``context_kind`` says which kind; everything else (splits, users, targets, labels,
ground truth) is that of the labelled-pair data set built with the same arguments.
"""

from __future__ import annotations

import random

from plus.data.attributes import build_attribute_users, build_response_bank, ground_truth_reward

FLEXIBLE_KINDS: tuple[str, ...] = ("conversations", "user_guide")
GUIDE_PHRASES: dict[str, list[str]] = {
    "verbose": ["I like thorough answers that walk through every point.", "Give me the full picture, in detail."],
    "concise": ["Keep it short; I only want the key point.", "I prefer brief answers without extra detail."],
    "formal": ["Please write to me in a professional register.", "I appreciate a formal, businesslike tone."],
    "informal": ["Talk to me like a friend, casual is best.", "Relaxed, chatty language suits me."],
    "humorous": ["A joke or two makes my day.", "I enjoy answers with a bit of fun in them."],
    "serious": ["No jokes please, I want a serious answer.", "I take these things seriously and like a sober tone."],
    "engaging": ["I love it when you ask me something back.", "Make it a conversation, invite me to reply."],
    "unengaging": ["Just answer and stop; no questions back.", "I do not want follow-up questions or chit-chat."],
    "polite": ["Courtesy matters to me.", "I value a kind and polite tone."],
    "rude": ["Be blunt with me, skip the niceties.", "I do not need politeness; straight talk is fine, even harsh."],
    "enthusiastic": ["I like an upbeat, excited voice!", "Energy and enthusiasm keep me reading."],
    "demure": ["A calm, modest voice suits me.", "Please keep the tone quiet and understated."],
    "confident": ["Tell me things with conviction.", "I want answers that sound sure of themselves."],
    "uncertain": ["I trust answers that admit doubt.", "Hedge where you are unsure; I like caution."],
}
ACKNOWLEDGEMENTS: list[str] = ["Thanks.", "Okay, got it.", "Thank you, that is all for now.", "Alright."]


def build_flexible_contexts(
    population: str = "uf-p-2",
    kind: str = "conversations",
    seed: int = 0,
    num_conversations: int = 3,
    num_candidates_seen: int = 4,
    **sizes: int,
) -> list[dict]:
    """Records of ``population`` (``uf-p-2`` or ``uf-p-4``) with ``kind`` contexts (see the module docstring);
    ``dataset`` = ``<population>-synthetic-<kind with - for _>``; ``sizes`` go to `build_attribute_users`."""
    if kind not in FLEXIBLE_KINDS:
        raise ValueError(f"Unknown context kind {kind!r}; choose one of {FLEXIBLE_KINDS}")
    records = build_attribute_users(population, seed=seed, **sizes)
    bank = build_response_bank(seed, sizes.get("num_candidates", 24))
    prompt_ids = sorted(bank.prompts)
    rng = random.Random(f"flexible-{population}-{kind}-{seed}")
    out = []
    for record in records:
        truth = record["ground_truth"]
        if kind == "user_guide":
            text = " ".join(rng.choice(GUIDE_PHRASES[pole]) for pole in truth["poles"])
            messages = [{"role": "user", "content": text}]
        else:
            messages, blocks = [], []
            for n, prompt_id in enumerate(rng.sample(prompt_ids, num_conversations), start=1):
                seen = rng.sample(bank.responses[prompt_id], num_candidates_seen)
                rewards = [(ground_truth_reward(truth["profile"], r), rng.random(), r) for r in seen]
                reply = max(rewards, key=lambda x: x[:2])[2].text
                thanks = rng.choice(ACKNOWLEDGEMENTS)
                messages += [
                    {"role": "user", "content": bank.prompts[prompt_id]},
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": thanks},
                ]
                blocks.append(f"Conversation {n}\nUser: {bank.prompts[prompt_id]}\nAssistant: {reply}\nUser: {thanks}")
            text = "\n\n".join(blocks)
        dataset = f"{record['dataset']}-{kind.replace('_', '-')}"
        out.append(
            dict(record, dataset=dataset, context=text, context_messages=messages, context_pairs=[], context_kind=kind)
        )
    return out
