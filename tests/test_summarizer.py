import pytest
import torch

from plus.models import load_causal_lm
from plus.summarizer import (
    SUMMARIZER_INSTRUCTION,
    SUMMARY_MARKER,
    assistant_prefill,
    build_queries,
    build_summarizer_messages,
    generate_summaries,
    next_word_probs,
    pad_sequences,
    parse_summary,
    response_logits,
    token_logprobs,
)

CONTEXTS = ["The user preferred: dogs are loyal.", "The user preferred: cats are calm.", "Birds sing."]


@pytest.fixture(scope="module")
def tiny():
    return load_causal_lm("tiny-chat-lm", device="cpu")


def test_instruction_asks_for_short_summary_and_ends_with_marker():
    assert SUMMARIZER_INSTRUCTION.endswith(f"Start your response with {SUMMARY_MARKER}")
    assert "50 words" in SUMMARIZER_INSTRUCTION
    messages = build_summarizer_messages("  some context ")
    assert messages == [{"role": "user", "content": f"{SUMMARIZER_INSTRUCTION}\n\nsome context"}]


def test_empty_context_is_a_clear_error():
    with pytest.raises(ValueError, match="non-empty context"):
        build_summarizer_messages("   ")


def test_parse_takes_text_after_the_last_marker():
    parsed = parse_summary(f"Sure. {SUMMARY_MARKER} draft {SUMMARY_MARKER}: likes dogs. ")
    assert parsed.text == "likes dogs."
    assert parsed.has_marker and not parsed.truncated and parsed.status == "ok"


@pytest.mark.parametrize(
    ("raw", "truncated", "text", "status"),
    [
        ("", False, "", "empty"),
        (f"{SUMMARY_MARKER}   ", False, "", "empty"),
        ("likes cats", False, "likes cats", "no_marker"),
        (f"{SUMMARY_MARKER} likes ca", True, "likes ca", "truncated"),
    ],
)
def test_parse_flags_bad_summaries(raw, truncated, text, status):
    parsed = parse_summary(raw, truncated=truncated)
    assert parsed.text == text
    assert parsed.status == status
    assert parsed.is_empty == (status == "empty")


def test_pad_sequences_left_and_right():
    sequences = [torch.tensor([1, 2, 3]), torch.tensor([4])]
    ids, mask = pad_sequences(sequences, pad_id=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_sequences(sequences, pad_id=0, side="right")
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_generation_shapes_lengths_and_cap(tiny):
    model, tokenizer = tiny
    torch.manual_seed(0)
    out = generate_summaries(model, tokenizer, CONTEXTS, max_new_tokens=6, batch_size=2)
    assert len(out.summaries) == len(CONTEXTS)
    assert out.query_ids.shape[0] == out.response_ids.shape[0] == len(CONTEXTS)
    assert out.response_ids.shape[1] <= 6
    assert ((out.response_lengths >= 1) & (out.response_lengths <= 6)).all()
    assert out.num_tokens == int(out.response_lengths.sum()) and out.tokens_per_second > 0
    for row, summary in enumerate(out.summaries):
        last = out.response_ids[row, out.response_lengths[row] - 1]
        ended = bool(last == tokenizer.eos_token_id)
        assert summary.truncated == (not ended and bool(out.response_lengths[row] == 6))
        assert ended or summary.truncated  # a response stops at the end-of-turn token or at the cap


def test_greedy_generation_is_deterministic_and_batch_size_invariant(tiny):
    model, tokenizer = tiny
    one = generate_summaries(model, tokenizer, CONTEXTS, max_new_tokens=5, do_sample=False, batch_size=1)
    three = generate_summaries(model, tokenizer, CONTEXTS, max_new_tokens=5, do_sample=False, batch_size=3)
    assert [s.raw for s in one.summaries] == [s.raw for s in three.summaries]


def test_sampling_is_reproducible_under_a_seed(tiny):
    model, tokenizer = tiny
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(generate_summaries(model, tokenizer, CONTEXTS, max_new_tokens=5).response_ids)
    assert torch.equal(runs[0], runs[1])


def test_prefilled_marker_counts_as_present(tiny):
    model, tokenizer = tiny
    out = generate_summaries(model, tokenizer, CONTEXTS[:1], max_new_tokens=4, prefill_marker=True)
    assert out.summaries[0].has_marker


def test_summary_prefix_starts_every_summary_and_is_not_a_generated_token(tiny):
    model, tokenizer = tiny
    out = generate_summaries(
        model, tokenizer, CONTEXTS, max_new_tokens=4, prefill_marker=True, summary_prefix="This user prefers"
    )
    for summary, query in zip(out.summaries, out.query_ids, strict=True):
        assert summary.is_empty or summary.text.startswith("This user prefers")
        assert tokenizer.decode(query, skip_special_tokens=True).endswith("This user prefers")
    assert any(not summary.is_empty for summary in out.summaries)
    assert out.response_lengths.max() <= 4  # the prefix is in the query, never in the trained response tokens


def test_a_summary_prefix_needs_the_marker():
    with pytest.raises(ValueError, match="summary_prefix"):
        assistant_prefill(prefill_marker=False, summary_prefix="This user prefers")


def test_next_word_probs_read_the_token_right_after_the_prefix(tiny):
    model, tokenizer = tiny
    words = [["dogs", "cats"]] * len(CONTEXTS)
    kwargs = dict(prefill_marker=True, summary_prefix="This user prefers", temperature=0.7)
    one = next_word_probs(model, tokenizer, CONTEXTS, words, batch_size=1, **kwargs)
    three = next_word_probs(model, tokenizer, CONTEXTS, words, batch_size=3, **kwargs)  # left-padded together
    assert one.shape == (3, 2) and torch.allclose(one, three, atol=1e-5)
    prompt = build_queries(tokenizer, CONTEXTS[:1], prefill_marker=True, summary_prefix="This user prefers")[0]
    with torch.no_grad():
        logits = model(tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids).logits[0, -1]
    dogs = tokenizer(" dogs", add_special_tokens=False).input_ids[0]
    assert torch.isclose(one[0, 0], (logits / 0.7).softmax(-1)[dogs], atol=1e-6)
    with pytest.raises(ValueError, match="one list of the same length per context"):
        next_word_probs(model, tokenizer, CONTEXTS, words[:2])


def test_response_logprobs_match_the_sampling_distribution(tiny):
    """Teacher-forced log-probs of the sampled tokens equal those of a step-by-step greedy decode, padding
    included (the first context is longer, so the others are left-padded)."""
    model, tokenizer = tiny
    out = generate_summaries(model, tokenizer, CONTEXTS, max_new_tokens=4, do_sample=False, batch_size=3)
    logits, hidden = response_logits(
        model, out.query_ids, out.query_mask, out.response_ids, out.response_mask, output_hidden_states=True
    )
    assert logits.shape[:2] == out.response_ids.shape and hidden.shape[:2] == out.response_ids.shape
    # Greedy decoding picks the arg-max at every step, so the teacher-forced arg-max must reproduce it, except at
    # near ties: the cached step-by-step decode and the one full forward differ in the last bits.
    mask = out.response_mask.bool()
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1] > 1e-3) & mask
    assert clear.any() and torch.equal(logits.argmax(-1)[clear], out.response_ids[clear])
    logprobs = token_logprobs(logits, out.response_ids)  # (B, S)
    assert torch.all(logprobs[mask] <= 0) and torch.isfinite(logprobs).all()
