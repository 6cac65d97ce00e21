"""The ``lmos train`` flow end to end on tiny models: CLI, loading, determinism, LoRA, resume, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lmos.train.cli import app

TINY = """
[model]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 1
num_attention_heads = 2
num_key_value_heads = 2
vocab_size = 320
[data]
synthetic = 120
eval_size = 10
max_length = 512
[train]
steps = 6
batch_size = 8
warmup_steps = 2
eval_every = 3
checkpoint_every = 3
eval_generate = 2
save_dtype = "float32"
"""
MODEL_FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "train.toml",
    "metrics.json",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY)
    return path


def _train(*args: str) -> Any:
    result = CliRunner().invoke(app, ["train", "--device", "cpu", "--quiet", *args])
    return result


@pytest.fixture(scope="module")
def base(config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base")
    result = _train("--config", str(config), "--out", str(out), "--seed", "3")
    assert result.exit_code == 0, result.output
    return out


def _weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_train_writes_a_loadable_model_directory(base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in MODEL_FILES:
        assert (base / name).is_file(), name
    os.environ["HF_HUB_OFFLINE"] = "1"
    model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    assert tok.eos_token == "<|end|>" and model.generation_config.eos_token_id == tok.eos_token_id
    model_any: Any = model
    enc: Any = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    ids: Any = enc["input_ids"]
    out: Any = model_any.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    metrics = json.loads((base / "metrics.json").read_text())
    assert metrics["steps"] == 6 and "tool_call_acc" in metrics and metrics["eval_loss"] > 0
    assert "seed = 3" in (base / "train.toml").read_text()


def test_same_seed_gives_identical_weights(config: Path, base: Path, tmp_path: Path) -> None:
    import torch

    again = tmp_path / "again"
    assert _train("--config", str(config), "--out", str(again), "--seed", "3").exit_code == 0
    a, b = _weights(base), _weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = tmp_path / "other"
    assert _train("--config", str(config), "--out", str(other), "--seed", "4").exit_code == 0
    assert not all(torch.equal(a[k], _weights(other)[k]) for k in a)


def test_resume_continues_from_the_newest_checkpoint(config: Path, base: Path, tmp_path: Path) -> None:
    """Kill a run after step 3 (simulated: drop the later checkpoint), resume, get the same weights."""
    import shutil

    import torch

    out = tmp_path / "r"
    assert _train("--config", str(config), "--out", str(out), "--seed", "3").exit_code == 0
    shutil.rmtree(out / "checkpoints" / "step-0000006")
    (out / "model.safetensors").unlink()
    assert (out / "checkpoints" / "step-0000003" / "state.json").is_file()
    result = _train("--config", str(config), "--out", str(out), "--seed", "3", "--resume")
    assert result.exit_code == 0, result.output
    a, b = _weights(base), _weights(out)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_stages_with_until_step_give_the_same_weights_as_one_run(
    config: Path, base: Path, tmp_path: Path
) -> None:
    """The CPU recipe: stop at a step (checkpointed), --resume to the end = one uninterrupted run."""
    import torch

    out = tmp_path / "s"
    first = _train("--config", str(config), "--out", str(out), "--seed", "3", "--until-step", "4")
    assert first.exit_code == 0, first.output
    assert json.loads((out / "metrics.json").read_text())["stopped"] == "stage end at step 4"
    assert (out / "checkpoints" / "step-0000004" / "state.json").is_file()
    second = _train("--config", str(config), "--out", str(out), "--seed", "3", "--resume")
    assert second.exit_code == 0, second.output
    a, b = _weights(base), _weights(out)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert "stopped" not in json.loads((out / "metrics.json").read_text())


def test_the_wall_clock_guard_ends_a_steps_run_early(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    result = _train("--config", str(config), "--out", str(out), "--seed", "3",
                    "--stop-after-minutes", "0.0001")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] < 6 and metrics["stopped"].startswith("wall-clock guard")
    assert (out / "model.safetensors").is_file()


def test_lora_changes_only_adapter_weights(config: Path, base: Path, tmp_path: Path) -> None:
    import torch

    from lmos.train.config import load_config
    from lmos.train.lora import is_adapter_param
    from lmos.train.trainer import TrainJob, train

    cfg = load_config(config)
    cfg.train.lr = 0.05
    before = _weights(base)
    result = train(
        TrainJob(
            config=cfg, out=tmp_path / "lora", from_dir=base, lora=True, device="cpu", show_progress=False
        )
    )
    trained = dict(result.model.named_parameters())
    assert all(is_adapter_param(n) == p.requires_grad for n, p in trained.items())
    lora_b = [p for n, p in trained.items() if "lora_B" in n]
    assert lora_b and any(float(p.detach().abs().sum()) > 0 for p in lora_b)  # B starts at zero: it moved
    for name, p in trained.items():
        if not is_adapter_param(name):
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach().cpu(), before[plain]), name
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    merged = _weights(tmp_path / "lora")
    assert merged.keys() == before.keys()
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"]
    )


def test_lora_needs_a_base_model(tmp_path: Path) -> None:
    result = _train("--out", str(tmp_path), "--lora")
    assert result.exit_code == 1 and "error: --lora" in result.output


def test_bad_data_is_one_clear_error_with_line_numbers(config: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
        "oops\n"
        '{"messages": [{"role": "wizard", "content": "x"}]}\n'
    )
    result = _train("--config", str(config), "--data", str(data), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "error:" in result.output and "line 2:" in result.output and "line 3:" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # stopped before training: no output directory, no checkpoint


def test_bad_config_and_device_errors(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 1\n")
    result = _train("--config", str(bad), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "learning_rate" in result.output
    result = _train("--config", str(config), "--out", str(tmp_path / "o"), "--device", "tpu")
    assert result.exit_code == 1 and "unknown device" in result.output
    result = _train("--config", str(config), "--out", str(tmp_path / "o2"), "--resume")
    assert result.exit_code == 1 and "no checkpoint" in result.output


def test_corpus_command_writes_jsonl(tmp_path: Path) -> None:
    from lmos.train.data import load_jsonl

    out = tmp_path / "c.jsonl"
    result = CliRunner().invoke(app, ["corpus", "-n", "25", "--seed", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(load_jsonl(out)) == 25
    result = CliRunner().invoke(app, ["corpus", "-n", "3", "--split", "nope"])
    assert result.exit_code == 1 and "unknown split" in result.output
