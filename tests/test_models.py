import pytest
import torch

from plus import models


def test_byte_tokenizer_round_trips_any_text_and_has_a_chat_template():
    tokenizer = models.byte_tokenizer()
    text = "User: likes dogs 🐕 — Assistant: ok"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode())  # one token per byte
    assert tokenizer.decode(ids) == text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|im_start|>assistant\n") and text in chat


def test_tiny_models_are_deterministic_whatever_the_global_seed():
    torch.manual_seed(1)
    first, _ = models.load_causal_lm("tiny-chat-lm", device="cpu")
    torch.manual_seed(2)
    second, _ = models.load_causal_lm("tiny-chat-lm", device="cpu")
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_causal_lm_is_left_padded_and_generates(tiny_chat_lm):
    model, tokenizer = tiny_chat_lm
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    batch = tokenizer(["a", "longer prompt"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch.input_ids.shape[1] + 4)


def test_backbone_returns_hidden_states_of_its_width(tiny_encoder):
    model, tokenizer = tiny_encoder
    batch = tokenizer(["abc", "de"], return_tensors="pt", padding=True)
    hidden = model(**batch).last_hidden_state  # (B, T, H)
    assert hidden.shape == (2, 3, models.hidden_size("tiny-encoder"))
    assert not models.is_decoder(model)
    decoder, _ = models.load_backbone("tiny-chat-lm", device="cpu")
    assert models.is_decoder(decoder)


def test_fp32_on_cpu():
    assert models.default_dtype(torch.device("cpu")) == torch.float32
    assert models.default_dtype(torch.device("cuda")) == torch.bfloat16


@pytest.mark.parametrize("name", ["no-such-model", "nobody/missing-model-xyz", "/nonexistent/local/path"])
def test_unknown_name_lists_what_is_available_offline(name):
    with pytest.raises(models.ModelNotAvailableError) as info:
        models.load_backbone(name, device="cpu")
    message = str(info.value)
    assert repr(name) in message
    for offline in ("smollm2-135m-instruct", "all-minilm-l6-v2", "tiny-chat-lm", "tiny-encoder"):
        assert offline in message


def test_offline_encoder_gives_a_real_embedding():
    model, tokenizer = models.load_backbone("all-minilm-l6-v2", device="cpu")
    batch = tokenizer(["I love dogs.", "I adore puppies.", "Tax law is complex."], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, 384)
    mask = batch.attention_mask.unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    # A pretrained encoder puts paraphrases closer than unrelated text; random weights would not.
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


@pytest.mark.slow
def test_offline_summarizer_converts_once_and_generates_text(tmp_path, monkeypatch):
    monkeypatch.setenv("PLUS_CACHE", str(tmp_path))
    model, tokenizer = models.load_causal_lm("smollm2-135m-instruct", device="cpu")
    assert (tmp_path / "smollm2-135m-instruct" / "model.safetensors").exists()
    assert model.dtype == torch.float32
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    batch = tokenizer([prompt], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, batch.input_ids.shape[1] :])


def test_loading_a_tiny_model_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.load_backbone("tiny-encoder", device="cpu")
    assert torch.equal(torch.rand(3), expected)


def _local_folder(path, model, tokenizer=None):
    """``model`` (and ``tokenizer``, if given) saved as a local model folder, as a user would hand one over."""
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("load", [models.load_tokenizer, models.load_backbone])
def test_local_folder_without_tokenizer_files_is_refused(tmp_path, tiny_encoder, load):
    folder = _local_folder(tmp_path / "encoder", tiny_encoder[0])  # config.json + model.safetensors only
    with pytest.raises(models.ModelNotAvailableError) as info:
        load(str(folder))  # before: a 5-token tokenizer that gives every text the same ids
    message = str(info.value)
    assert f"local folder {folder} has no tokenizer files" in message and "tokenizer.json" in message


def test_tokenizer_of_only_special_tokens_is_refused(tmp_path, tiny_encoder):
    folder = _local_folder(tmp_path / "encoder", tiny_encoder[0])
    (folder / "vocab.txt").write_text("")  # a vocabulary file with no vocabulary
    with pytest.raises(models.ModelNotAvailableError, match="has only its 5 special tokens"):
        models.load_tokenizer(str(folder))


def test_local_folder_with_its_tokenizer_loads_and_tells_texts_apart(tmp_path, tiny_encoder):
    folder = _local_folder(tmp_path / "encoder", *tiny_encoder)
    model, tokenizer = models.load_backbone(str(folder), device="cpu")
    assert tokenizer("I love dogs.").input_ids != tokenizer("Tax law is complex.").input_ids
    assert models.hidden_size(str(folder)) == model.config.hidden_size


@pytest.mark.parametrize(
    "fixture, load, broken_file, content, error",
    [
        ("tiny_encoder", models.load_backbone, "model.safetensors", "garbage", "SafetensorError"),
        ("tiny_chat_lm", models.load_causal_lm, "model.safetensors", "garbage", "SafetensorError"),
        ("tiny_encoder", models.load_backbone, "config.json", "{not json", "not a valid JSON file"),
    ],
    ids=["encoder-weights", "causal-lm-weights", "encoder-config"],
)
def test_local_folder_that_fails_to_load_reports_the_real_error(
    tmp_path, request, fixture, load, broken_file, content, error
):
    folder = _local_folder(tmp_path / "model", *request.getfixturevalue(fixture))
    (folder / broken_file).write_text(content)
    with pytest.raises(models.ModelNotAvailableError) as info:
        load(str(folder), device="cpu")
    message = str(info.value)
    assert f"from the local folder {folder}" in message and error in message
    assert "not a local folder" not in message


def test_hidden_size_of_a_model_that_does_not_load_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotAvailableError, match="Cannot load model 'no-such/model-xyz'"):
        models.hidden_size("no-such/model-xyz")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(models.ModelNotAvailableError, match=f"from the local folder {tmp_path}"):
        models.hidden_size(str(tmp_path))
