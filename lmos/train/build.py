"""Preparing a run: the conversations and their split, the tokenizer, the model.

Training from scratch builds a fresh BPE tokenizer from the training split and
a randomly initialised Llama-architecture decoder from the ``[model]`` config;
fine-tuning (``--from DIR``) loads both from an existing model directory.  The
special-token ids are written into the model config and generation config so
``generate`` stops at ``<|end|>`` without extra arguments.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from lmos.chatformat import BOS, END, PAD
from lmos.errors import Errno, SyscallError
from lmos.train.config import TrainConfig
from lmos.train.corpus import generate
from lmos.train.data import Conversation, load_jsonl

TOKENIZER_SAMPLE = 50_000  # conversations the BPE learns its merges from (more adds time, not quality)


def load_conversations(cfg: TrainConfig, data: Path | None) -> tuple[list[Conversation], str]:
    """The conversations to train on and a name for error messages."""
    if data is not None:
        return load_jsonl(data), str(data)
    if cfg.data.synthetic <= 0:
        raise SyscallError(Errno.EINVAL, "no training data: give --data FILE or set [data] synthetic > 0")
    convs = generate(cfg.data.synthetic, seed=cfg.data.corpus_seed, profile=cfg.data.corpus,
                     workers=cfg.data.workers or None)
    for i, c in enumerate(convs, start=1):
        c.line = i
    return convs, f"<synthetic {cfg.data.corpus} corpus, seed {cfg.data.corpus_seed}>"


def split(
    convs: list[Conversation], eval_size: int, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """A seeded (train, eval) split; eval takes at most a fifth of the data."""
    order = list(range(len(convs)))
    random.Random(seed).shuffle(order)
    n_eval = min(eval_size, len(convs) // 5)
    eval_ids = set(order[:n_eval])
    train = [c for i, c in enumerate(convs) if i not in eval_ids]
    held = [convs[i] for i in sorted(eval_ids)]
    return train, held


def build_tokenizer(cfg: TrainConfig, train: list[Conversation], from_dir: Path | None) -> Any:
    """Load the base model's tokenizer, or train a BPE on the training split."""
    from lmos.train.tokenizer import train_tokenizer

    if from_dir is not None:  # a directory without a tokenizer, or with another model's, fails here
        from lmos.drivers import hf_load

        root = hf_load.check_model_dir(from_dir)
        tokenizer = hf_load.load_tokenizer(root, from_dir)
        vocab = hf_load.config_vocab(root)
        if vocab is not None:
            hf_load.check_vocab(from_dir, vocab, len(tokenizer))
        return tokenizer
    return train_tokenizer(train[:TOKENIZER_SAMPLE], cfg.model.vocab_size)


def special_ids(tokenizer: Any) -> dict[str, int]:
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (("end", END), ("pad", PAD), ("bos", BOS))
    }
    missing = [n for n, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing and "end" in missing:
        raise SyscallError(Errno.EINVAL, f"the tokenizer lacks the lmos chat tokens ({END})")
    return ids


def build_model(cfg: TrainConfig, tokenizer: Any, from_dir: Path | None, seed: int) -> Any:
    """A fresh decoder from the config (seeded init), or the model in ``from_dir`` as fp32."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = special_ids(tokenizer)
    if from_dir is not None:
        if not (from_dir / "config.json").is_file():
            raise SyscallError(Errno.ENOENT, f"not a model directory (no config.json): {from_dir}")
        model = AutoModelForCausalLM.from_pretrained(
            str(from_dir), dtype=torch.float32, local_files_only=True
        )
        from lmos.drivers.hf_load import check_vocab, embedding_rows

        rows = embedding_rows(model)
        if rows is not None:
            check_vocab(from_dir, rows, len(tokenizer))
    else:
        m = cfg.model
        if m.hidden_size % m.num_attention_heads:
            raise SyscallError(Errno.EINVAL, "[model] hidden_size must be a multiple of num_attention_heads")
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=m.hidden_size,
            intermediate_size=m.intermediate_size,
            num_hidden_layers=m.num_hidden_layers,
            num_attention_heads=m.num_attention_heads,
            num_key_value_heads=m.num_key_value_heads,
            max_position_embeddings=m.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
            tie_word_embeddings=m.tie_word_embeddings,
            bos_token_id=ids["bos"],
            eos_token_id=ids["end"],
            pad_token_id=ids["pad"],
            attention_bias=False,
            mlp_bias=False,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)  # type: ignore[assignment]
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"],
        eos_token_id=ids["end"],
        pad_token_id=ids["pad"],
        do_sample=False,
        max_new_tokens=128,
    )
    return model


def count_params(model: Any) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
