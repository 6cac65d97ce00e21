"""Bad model directories fail at load with one clear error (tiny random-init models in tmp dirs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmos.drivers import hf_load
from lmos.drivers.hf import HFDriver
from lmos.errors import Errno, SyscallError


def _model(vocab: int) -> object:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=vocab, max_position_embeddings=64,
                      bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def _tokenizer(n_chars: int) -> object:
    """A word-level tokenizer of ``3 + n_chars`` tokens (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i + 3 for i in range(n_chars)})
    tok = Tokenizer(models.WordLevel(vocab, "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _save(path: Path, vocab: int, tokenizer_tokens: int | None) -> Path:
    _model(vocab).save_pretrained(str(path))  # type: ignore[attr-defined]
    if tokenizer_tokens is not None:
        _tokenizer(tokenizer_tokens - 3).save_pretrained(str(path))  # type: ignore[attr-defined]
    return path


def _load(path: Path, **kw: object) -> tuple[object, object]:
    return hf_load.load(str(path), torch.device("cpu"), torch.float32, **kw)  # type: ignore[arg-type]


def test_a_tokenizer_with_more_tokens_than_the_embedding_is_refused(tmp_path: Path) -> None:
    d = _save(tmp_path / "m", vocab=64, tokenizer_tokens=100)
    with pytest.raises(SyscallError) as e:
        _load(d)
    assert e.value.errno == Errno.EINVAL
    msg = e.value.message
    assert str(d) in msg and "100 tokens" in msg and "64 rows" in msg and "\n" not in msg
    with pytest.raises(SyscallError) as e:  # the driver (and so the kernel) gets the same error
        HFDriver.from_pretrained(str(d), device="cpu", kv_memory="1MiB")
    assert e.value.errno == Errno.EINVAL and "100 tokens" in e.value.message


def test_another_models_much_smaller_tokenizer_is_refused(tmp_path: Path) -> None:
    d = _save(tmp_path / "m", vocab=4096, tokenizer_tokens=40)
    with pytest.raises(SyscallError) as e:
        _load(d)
    assert e.value.errno == Errno.EINVAL and "40 tokens" in e.value.message and "4096 rows" in e.value.message


def test_a_padded_embedding_is_fine(tmp_path: Path) -> None:
    """Real checkpoints pad the embedding past the tokenizer (Qwen2: 271 spare rows): not an error."""
    d = _save(tmp_path / "m", vocab=128, tokenizer_tokens=100)
    _, tok = _load(d)
    assert tok is not None and len(tok.hf) == 100  # type: ignore[attr-defined]
    hf_load.check_vocab("q", 151936, 151665)  # Qwen2's own sizes
    hf_load.check_vocab("p", 32064, 32011)  # Phi-3's


def test_no_tokenizer_when_one_is_required(tmp_path: Path) -> None:
    d = _save(tmp_path / "m", vocab=64, tokenizer_tokens=None)
    with pytest.raises(SyscallError) as e:
        _load(d, require_tokenizer=True)
    assert e.value.errno == Errno.EINVAL
    assert str(d) in e.value.message and "no tokenizer" in e.value.message and "\n" not in e.value.message
    _, tok = _load(d)  # token ids alone, when the caller says so
    assert tok is None
