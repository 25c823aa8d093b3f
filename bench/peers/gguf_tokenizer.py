"""Write a Hugging Face tokenizer folder for a GGUF model, from the vocabulary inside the GGUF file.

Peer benchmark tools (AIPerf, guidellm) count tokens with a Hugging Face tokenizer, which they would download
from the Hub; the lab has no Hub access and needs none: the GGUF file carries the model's byte-level BPE
(tokens, merges, special tokens, chat template). Run with a Python that has `gguf` and `tokenizers` (the
peer's own virtual environment, not the lab's):

    python bench/peers/gguf_tokenizer.py MODEL.gguf OUT_DIR

OUT_DIR then holds tokenizer.json and tokenizer_config.json, loadable with
`transformers.AutoTokenizer.from_pretrained(OUT_DIR)`. Only the GPT-2 style byte-level BPE is handled
(SmolLM2, Llama 3, Qwen2 use it); anything else is refused. bench/openai_peers.py checks the result token
for token against llama.cpp's own tokenizer before using it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

# llama.cpp's pre-tokenizer for SmolLM2 ("smollm" in its vocab) is GPT-2's regex with every digit on its own.
_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_CONTROL = 3  # llama.cpp token type: control (special) token


def _field(reader: GGUFReader, key: str) -> Any:
    """A metadata value: strings are stored as uint8 parts, numbers as one-element arrays."""
    field = reader.fields.get(key)
    if field is None:
        return None

    def value(index: int) -> Any:
        part = field.parts[index]
        return bytes(part).decode() if part.dtype.name == "uint8" else part[0].item()

    values = [value(i) for i in field.data]
    return values if field.types and field.types[0].name == "ARRAY" else values[0]


def build(gguf_path: Path, out: Path) -> None:
    reader = GGUFReader(str(gguf_path))
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise SystemExit(f"{gguf_path}: tokenizer model {kind!r} is not byte-level BPE (gpt2); not handled")
    tokens: list[str] = _field(reader, "tokenizer.ggml.tokens")
    merges: list[str] = _field(reader, "tokenizer.ggml.merges")
    types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type")]
    bos = int(_field(reader, "tokenizer.ggml.bos_token_id"))
    eos = int(_field(reader, "tokenizer.ggml.eos_token_id"))
    template = _field(reader, "tokenizer.chat_template")

    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split(Regex(_GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    special = [tok for tok, kind in zip(tokens, types, strict=True) if kind == _CONTROL]
    tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in special])
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokens[bos],
        "eos_token": tokens[eos],
        "model_max_length": 8192,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    if template:
        config["chat_template"] = template
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    build(Path(sys.argv[1]), Path(sys.argv[2]))
