"""Loading a transformers checkpoint from local disk, and reading its defaults.

Loading is strictly local (``local_files_only=True``): lmos never reaches the
network at run time, and a mistyped model path must fail at once with
``ENOENT`` instead of turning into a hub lookup.

Bad model directories fail at load with one clear error, before the weights
are read where the files allow it, not later at the first prompt (or as an
``IndexError`` from the embedding): a directory without tokenizer files is
ENOENT naming the directory and the files looked for, and a tokenizer whose
vocabulary does not fit the model's embedding (ids the model has no row for,
or a tokenizer far smaller than the embedding, i.e. another model's) is EINVAL
naming the directory and both sizes.  Every directory the driver loads has a
tokenizer: the shell, the apps and the HTTP API all speak text.  A model
without one (a random-init model in memory) is given to ``HFDriver`` directly
and works on token ids alone.  ``lmos train --from`` runs the same checks
(:func:`check_model_dir`, :func:`load_tokenizer`, :func:`check_vocab`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmos.drivers.base import SamplingParams, control_tokens
from lmos.errors import Errno, SyscallError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# Checkpoints pad the embedding past the tokenizer (to a multiple of 64 or 128 for speed, plus reserved
# rows): Qwen2 has 271 spare rows, Phi-3 53.  More than this many spare rows means another model's tokenizer.
MAX_SPARE_ROWS = 1024
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class HFTokenizer:
    """The :class:`lmos.drivers.base.Tokenizer` view of a transformers tokenizer.

    ``encode`` adds no special tokens: the kernel appends pieces of context
    (tool results, messages) to a running sequence, and a BOS in the middle of
    a context would be wrong.  ``bos_token_id`` is exposed for whoever starts
    a fresh context.
    """

    def __init__(self, tok: Any) -> None:
        self.hf = tok
        self.bos_token_id: int | None = tok.bos_token_id
        self.controls, self.control_ids = control_tokens(tok)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_plain(self, text: str) -> list[int]:
        """``text`` as ordinary characters: a control-token string in it is not the control token.

        For a fast tokenizer this runs the backend's normalizer, pre-tokenizer and
        model directly, skipping added tokens, with no shared state toggled (so it
        is safe while another thread encodes); a slow one is asked to split them.
        """
        backend = getattr(self.hf, "backend_tokenizer", None)
        if backend is not None:
            if backend.normalizer is not None:
                text = backend.normalizer.normalize_str(text)
            splits = ([piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
                      if backend.pre_tokenizer is not None else [text])
            ids = [t.id for piece in splits for t in backend.model.tokenize(piece)]
        else:
            ids = list(self.hf.encode(text, add_special_tokens=False, split_special_tokens=True))
        if self.control_ids.intersection(ids):
            raise SyscallError(Errno.EINVAL, "this tokenizer makes a control token out of plain text")
        return ids

    def encode_segments(self, segments: Sequence[tuple[str, bool]]) -> list[int]:
        """Token ids of ``(text, is_data)`` segments: framing with its special tokens, data as plain text.

        An ordinary conversation is encoded whole, exactly as ``encode`` of the
        joined text (and as ``model.generate`` would see it).  That result is
        kept only if it has no more control tokens than the framing spells out,
        which also catches one formed across a boundary or by normalization;
        otherwise, or when a data segment holds a control-token string, each
        segment is encoded on its own and data as plain text.
        """
        if self.controls is None:
            return self.encode("".join(text for text, _ in segments))
        if not any(data and self.controls.search(text) for text, data in segments):
            ids = self.encode("".join(text for text, _ in segments))
            framing = sum(len(self.controls.findall(text)) for text, data in segments if not data)
            made = (0 if self.control_ids.isdisjoint(ids) else sum(1 for t in ids if t in self.control_ids))
            if made <= framing:
                return ids
        ids = []
        for text, data in segments:
            if text:
                ids += self.encode_plain(text) if data else self.encode(text)
        return ids

    def decode(self, token_ids: list[int]) -> str:
        return str(self.hf.decode(token_ids))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SyscallError(Errno.EINVAL, f"bad device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SyscallError(Errno.ENOENT, "CUDA requested but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise SyscallError(Errno.EINVAL, f"unsupported device {device!r} (cpu or cuda)")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype | str:
    """fp32 on CPU unless asked; on CUDA "auto" keeps the checkpoint's dtype."""
    if dtype == "auto":
        return "auto" if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise SyscallError(Errno.EINVAL, f"bad dtype {dtype!r} (float32, float16, bfloat16, auto)") from None


def check_vocab(path: str | os.PathLike[str], vocab_size: int, tokenizer_size: int) -> None:
    """EINVAL unless the tokenizer's vocabulary fits the model's (see :data:`MAX_SPARE_ROWS`).

    ``vocab_size`` is the model's ``config.vocab_size`` or its embedding's rows
    (the same number, unless the config lies)."""
    spare = vocab_size - tokenizer_size
    if spare < 0 or spare > max(MAX_SPARE_ROWS, tokenizer_size // 50):
        why = ("the model has no embedding row for the ids above it" if spare < 0
               else "is the tokenizer from another model?")
        raise SyscallError(Errno.EINVAL, f"model at {str(path)!r} does not match its tokenizer: the "
                           f"tokenizer has {tokenizer_size} tokens but the model's vocab_size is "
                           f"{vocab_size} ({why})")


def embedding_rows(model: Any) -> int | None:
    """Rows of the model's input embedding (its vocabulary size), if it says."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None)
    if rows is None:
        rows = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(rows) if rows is not None else None


def check_model_dir(path: str | os.PathLike[str]) -> Path:
    """The directory of a local checkpoint: ENOENT unless it has ``config.json`` and tokenizer files."""
    root = Path(os.path.expanduser(path))
    if not root.is_dir() or not (root / "config.json").is_file():
        raise SyscallError(Errno.ENOENT, f"no model at {str(path)!r} (a directory with config.json)")
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise SyscallError(Errno.ENOENT, f"no tokenizer in model directory {str(path)!r} (none of "
                           f"{', '.join(TOKENIZER_FILES)}): save the model's tokenizer there "
                           "(tokenizer.save_pretrained(DIR))")
    return root


def config_vocab(root: Path) -> int | None:
    """``vocab_size`` from ``config.json`` (or its ``text_config``), read without loading the model."""
    try:
        doc = json.loads((root / "config.json").read_text())
    except (OSError, ValueError):
        return None  # from_pretrained reports an unreadable config
    for cfg in (doc, doc.get("text_config")) if isinstance(doc, dict) else ():
        if isinstance(cfg, dict) and isinstance(cfg.get("vocab_size"), int):
            return int(cfg["vocab_size"])
    return None


def load_tokenizer(root: Path, path: str | os.PathLike[str]) -> Any:
    """The transformers tokenizer of a checked model directory; EIO (one line) if it does not load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SyscallError(Errno.EIO, f"bad tokenizer in {str(path)!r}: {reason}") from None


def load(path: str, device: torch.device, dtype: torch.dtype | str) -> tuple[Any, HFTokenizer]:
    """Model and tokenizer from a local checkpoint directory (see the module docstring for the checks)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # lmos shows its own spinner while a model loads

    root = check_model_dir(path)
    hf_tok = load_tokenizer(root, path)  # both before the (slow) weights
    vocab = config_vocab(root)
    if vocab is not None:
        check_vocab(path, vocab, len(hf_tok))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(root), local_files_only=True, dtype=dtype, device_map=str(device)
        )
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SyscallError(Errno.ENOENT, f"cannot load model from {path!r}: {reason}") from None
    rows = embedding_rows(model)
    if rows is not None:
        check_vocab(path, rows, len(hf_tok))
    return model, HFTokenizer(hf_tok)


def default_sampling(model: Any) -> SamplingParams:
    """Sampling defaults as ``model.generate`` would apply them."""
    gc = getattr(model, "generation_config", None)
    if gc is None or not getattr(gc, "do_sample", False):
        penalty = getattr(gc, "repetition_penalty", None) if gc is not None else None
        return SamplingParams(temperature=0.0, repetition_penalty=float(penalty or 1.0))
    return SamplingParams(
        temperature=float(gc.temperature if gc.temperature is not None else 1.0),
        top_p=float(gc.top_p if gc.top_p is not None else 1.0),
        top_k=int(gc.top_k if gc.top_k is not None else 50),
        repetition_penalty=float(gc.repetition_penalty or 1.0),
    )


def eos_ids(model: Any) -> tuple[int, ...]:
    """End-of-sequence ids from the generation config, else the model config."""
    for src in (getattr(model, "generation_config", None), model.config):
        eos = getattr(src, "eos_token_id", None) if src is not None else None
        if eos is not None:
            return tuple(eos) if isinstance(eos, list | tuple) else (int(eos),)
    return ()
