"""Bad model directories fail at load with one clear error (tiny random-init models in tmp dirs):
in the loader, in the driver, and as one line from ``lmos run -m DIR`` and ``lmos train --from DIR``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmos.drivers import hf_load
from lmos.drivers.hf import HFDriver
from lmos.errors import Errno, SyscallError
from lmos.train.tokenizer import byte_tokenizer


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


def _load(path: Path) -> tuple[object, object]:
    return hf_load.load(str(path), torch.device("cpu"), torch.float32)


def _refused(path: Path) -> SyscallError:
    with pytest.raises(SyscallError) as e:
        _load(path)
    assert str(path) in e.value.message and "\n" not in e.value.message
    return e.value


def test_a_tokenizer_with_more_tokens_than_the_model_is_refused(tmp_path: Path) -> None:
    d = _save(tmp_path / "m", vocab=64, tokenizer_tokens=100)
    err = _refused(d)
    assert err.errno == Errno.EINVAL
    assert "100 tokens" in err.message and "vocab_size is 64" in err.message
    with pytest.raises(SyscallError) as e:  # the driver (and so the kernel) gets the same error
        HFDriver.from_pretrained(str(d), device="cpu", kv_memory="1MiB")
    assert e.value.errno == Errno.EINVAL and "100 tokens" in e.value.message


def test_the_vocabulary_is_checked_before_the_weights_are_read(tmp_path: Path) -> None:
    """From config.json: a large model with another model's tokenizer fails at once, not after loading."""
    d = _save(tmp_path / "m", vocab=64, tokenizer_tokens=100)
    (d / "model.safetensors").write_bytes(b"not read")
    err = _refused(d)
    assert err.errno == Errno.EINVAL and "100 tokens" in err.message
    assert hf_load.config_vocab(d) == 64


def test_another_models_much_smaller_tokenizer_is_refused(tmp_path: Path) -> None:
    d = _save(tmp_path / "m", vocab=4096, tokenizer_tokens=40)
    err = _refused(d)
    assert err.errno == Errno.EINVAL and "40 tokens" in err.message and "vocab_size is 4096" in err.message


def test_a_padded_embedding_is_fine(tmp_path: Path) -> None:
    """Real checkpoints pad the embedding past the tokenizer (Qwen2: 271 spare rows): not an error."""
    d = _save(tmp_path / "m", vocab=128, tokenizer_tokens=100)
    _, tok = _load(d)
    assert len(tok.hf) == 100  # type: ignore[attr-defined]
    hf_load.check_vocab("q", 151936, 151665)  # Qwen2's own sizes
    hf_load.check_vocab("p", 32064, 32011)  # Phi-3's


def test_a_vocabulary_under_100_tokens_loads(tmp_path: Path) -> None:
    """The auto-tuning probe's token ids fit any vocabulary (it drew ids up to 99: an IndexError)."""
    d = _save(tmp_path / "m", vocab=40, tokenizer_tokens=40)
    drv = HFDriver.from_pretrained(str(d), device="cpu", kv_memory="1MiB")  # max_seqs=0: the probe runs
    try:
        assert drv.tuning.source["max_seqs"] == "auto" and drv.vocab_size == 40
    finally:
        drv.close()


def test_no_tokenizer_is_refused(tmp_path: Path) -> None:
    d = _save(tmp_path / "m", vocab=64, tokenizer_tokens=None)
    err = _refused(d)
    assert err.errno == Errno.ENOENT and "no tokenizer" in err.message and "tokenizer.json" in err.message
    with pytest.raises(SyscallError) as e:
        HFDriver.from_pretrained(str(d), device="cpu", kv_memory="1MiB")
    assert e.value.errno == Errno.ENOENT and "no tokenizer" in e.value.message


def test_a_broken_tokenizer_is_one_line(tmp_path: Path) -> None:
    d = _save(tmp_path / "m", vocab=64, tokenizer_tokens=None)
    (d / "tokenizer.json").write_text("{not json")
    err = _refused(d)
    assert err.errno == Errno.EIO and "bad tokenizer" in err.message


@pytest.mark.parametrize("vocab", [256, 300, 4096])
def test_byte_tokenizer_fits_any_vocabulary(vocab: int) -> None:
    """The tokenizer that tests and benchmarks save with random models: exactly ``vocab`` tokens,
    id b < 256 is byte b, and any text survives encode and decode."""
    tok = byte_tokenizer(vocab)
    assert len(tok) == vocab and not tok.all_special_tokens
    text = "héllo wörld 😀 <|end|>"
    ids = tok.encode(text, add_special_tokens=False)
    assert max(ids) < vocab and tok.decode(ids) == text
    assert tok.decode([104, 105]) == "hi"


LMOS = "from lmos.cli import main; main()"


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", LMOS, *args], capture_output=True, text=True, timeout=180,
                          env=env, check=False)


def test_cli_says_it_in_one_line(tmp_path: Path) -> None:
    """``lmos run -m DIR`` and ``lmos train --from DIR``: exit 1 and one line naming the directory."""
    bare = _save(tmp_path / "bare", vocab=64, tokenizer_tokens=None)
    other = _save(tmp_path / "other", vocab=256, tokenizer_tokens=None)
    byte_tokenizer(300).save_pretrained(str(other))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    cases = [
        (["run", "-m", str(bare), "--state-dir", ":memory:", "chat", "hi"], "lmos: ENOENT: no tokenizer"),
        (["run", "-m", str(other), "--state-dir", ":memory:", "chat", "hi"], "lmos: EINVAL: model at"),
        (["train", "--from", str(bare), "--data", str(data), "--out", str(tmp_path / "o1"), "--steps", "1",
          "--quiet", "--device", "cpu"], "error: no tokenizer"),
        (["train", "--from", str(other), "--data", str(data), "--out", str(tmp_path / "o2"), "--steps", "1",
          "--quiet", "--device", "cpu"], "error: model at"),
    ]
    for args, start in cases:
        r = _cli(tmp_path, *args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Writing model shards" not in ln]
        assert r.returncode == 1 and len(lines) == 1, (args, r.stderr)
        assert lines[0].startswith(start) and str(tmp_path) in lines[0], lines[0]
        if "other" in lines[0]:
            assert "300 tokens" in lines[0] and "vocab_size is 256" in lines[0]
