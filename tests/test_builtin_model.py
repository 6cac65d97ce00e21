"""The shipped built-in model: loads offline and does a calc round trip with greedy decoding."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from lmos.chatformat import DEFAULT_SYSTEM_PROMPT, call_message, parse_call
from lmos.models import builtin_model_path
from lmos.train.toolbox import ToolBox

MAX_BYTES = 25 * 1024 * 1024


@pytest.fixture(scope="module")
def loaded() -> tuple[Any, Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    path = builtin_model_path()
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return model.eval(), tokenizer


def _v2() -> bool:
    """Whether the shipped model is the v2 one (trained with tool declarations, lmos.train.corpus_v2)."""
    from lmos.train.config import load_config

    return load_config(builtin_model_path() / "train.toml").data.corpus == "v2"


def _tools() -> list[dict[str, Any]] | None:
    """What the agent declares for calc, kv and clock (v2); the v1 model knows no declarations."""
    from lmos.train.bench_v2 import standard_tools

    return standard_tools() if _v2() else None


def _reply(model: Any, tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None) -> str:
    import torch

    ids = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=64, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    assert new[-1] == tokenizer.eos_token_id, "generation must stop at <|end|>"
    return str(tokenizer.decode(new[:-1], skip_special_tokens=False))


def test_shipped_files_are_complete_and_small() -> None:
    path = builtin_model_path()
    for name in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "train.toml",
    ]:
        assert (path / name).is_file(), name
    assert (path / "model.safetensors").stat().st_size <= MAX_BYTES
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["dtype"] in ("float16", "bfloat16")
    assert "chat_template" in json.loads((path / "tokenizer_config.json").read_text())


def test_loads_as_fp32_with_the_chat_tokens(loaded: tuple[Any, Any]) -> None:
    import torch

    model, tokenizer = loaded
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.eos_token == "<|end|>" and tokenizer.pad_token == "<|pad|>"
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|end|>")


def test_calc_question_gets_a_correct_call_and_answer(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "what is 12 * 7?"},
    ]
    call = parse_call(_reply(model, tokenizer, messages, _tools()))
    assert call == ("calc", {"expr": "12 * 7"})
    result = ToolBox().run(*call)
    assert result == "84"
    messages += [call_message(*call), {"role": "tool", "content": result}]
    answer = _reply(model, tokenizer, messages, _tools())
    assert "84" in answer and parse_call(answer) is None


def test_small_talk_uses_no_tool(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "hello"}]
    assert parse_call(_reply(model, tokenizer, messages, _tools())) is None


def test_v2_calls_only_declared_tools(loaded: tuple[Any, Any]) -> None:
    """v2: an unseen declared tool is called by its declaration; with nothing declared, nothing is."""
    if not _v2():
        pytest.skip("the shipped model predates tool declarations (v1)")
    model, tokenizer = loaded
    weather = {"name": "get_weather", "description": "Get the current weather for a city.",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"]}}
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": "what's the weather in Oslo?"}]
    assert parse_call(_reply(model, tokenizer, messages, [weather])) == ("get_weather", {"city": "Oslo"})
    calc = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": "what is 12 * 7?"}]
    assert parse_call(_reply(model, tokenizer, calc)) is None
