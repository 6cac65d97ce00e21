"""Building the BPE tokenizer of a model trained from scratch.

The pre-tokenizer cuts text into runs of letters, single digits, single
punctuation marks and runs of whitespace before BPE merges anything.  Merges
therefore never cross those boundaries, so a value tokenizes the same wherever
it appears: ``u1dtin`` after a space in the user turn, after a quote in the
call's JSON and alone in the tool result are the same ids.  That is what lets a
tiny model copy values it has never seen, piece by piece.  Bytes are mapped
with the byte-level alphabet, so any text (any language, emoji) encodes without
an unknown token.

The result is saved as a transformers ``PreTrainedTokenizerFast`` with the chat
template of :mod:`lmos.chatformat`, ``<|end|>`` as end-of-sequence and
``<|pad|>`` as padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lmos.chatformat import BOS, CHAT_TEMPLATE, END, PAD, SPECIAL_TOKENS, assistant_text, tool_block
from lmos.train.data import Conversation

SPLIT_PATTERN = r"\s+|\p{L}+|\p{N}|[^\s\p{L}\p{N}]"


def _texts(conversations: Iterable[Conversation]) -> Iterator[str]:
    """The plain text of each message (markers excluded: they are special tokens)."""
    for conv in conversations:
        if conv.tools:
            yield tool_block(conv.tools)
        for m in conv.messages:
            yield assistant_text(m) if m["role"] == "assistant" else str(m.get("content") or "")


def train_tokenizer(conversations: Iterable[Conversation], vocab_size: int = 1024) -> Any:
    """Train a byte-level BPE on the conversations; return a ``PreTrainedTokenizerFast``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_texts(conversations), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=END,
        pad_token=PAD,
        bos_token=BOS,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (END, PAD, BOS)],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def load_tokenizer(path: str | Path) -> Any:
    """Load a saved tokenizer from a model directory, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def byte_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE of exactly ``vocab_size`` tokens, made without training.

    For a model that has no tokenizer of its own (a random-init model saved by
    a test or a benchmark): a model directory must have one to load, and this
    one fits any vocabulary of 256 tokens or more.  Id ``b`` < 256 is byte
    ``b``; the ids above are merges of two bytes in a fixed order.  It has no
    special tokens, so nothing in it is a control token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lmos.errors import Errno, SyscallError

    if not 256 <= vocab_size <= 256 + 256 * 256:
        raise SyscallError(Errno.EINVAL, f"a byte tokenizer has 256 to 65792 tokens, not {vocab_size}")
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte-to-character map
    others = [b for b in range(256) if b not in printable]
    char = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
    alphabet = [char[b] for b in range(256)]
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = [(a, b) for a in alphabet for b in alphabet][: vocab_size - 256]
    vocab.update({a + b: 256 + i for i, (a, b) in enumerate(merges)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, clean_up_tokenization_spaces=False)
    # saved as explicit nulls: the tokenizer class of a model type (Qwen2's) otherwise adds its own
    # default special tokens at load, one more token than the model has rows for
    tok.init_kwargs.update(dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token")))
    return tok
