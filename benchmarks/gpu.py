"""One GPU run: lmos's HF driver (through the kernel, and alone) against transformers, on a ~0.5B model.

Built from a config, never downloaded: a random-init Qwen2 of the Qwen2-0.5B shape (24 layers,
hidden 896, 14 heads / 2 KV heads, vocab 151,936; ~494M parameters) in bf16 on CUDA.  For each of
1, 16, 64 and 256 concurrent requests (token-id prompts of 32-92 tokens, new ones for every size,
so no prefix cache helps; 64 greedy tokens each, no EOS), it runs:

* ``lmos``: the whole kernel, one process per request through ``Kernel.complete`` (one kernel
  opened once for all sizes; its startup is timed);
* ``lmos_driver``: the paged driver alone under a minimal scheduler loop;
* ``padded``: one left-padded batch through ``model.generate``;
* ``sequential``: ``model.generate`` on one prompt after another, on the first
  ``--seq-prompts`` prompts of each size only (its tok/s does not depend on the batch; 256
  sequential requests would take minutes).

Each peer gets an untimed warm-up on other prompts first.  Reported per size: tok/s (generated
tokens / wall seconds), the ratios of the lmos peers to padded and sequential, how many
sequences equal padded ``generate``'s (and sequential's, on its prompts) -- bf16 rounding and
different kernels may flip a near-tie argmax of a random model, so the counts are reported,
not enforced -- and peak GPU memory per peer (``torch.cuda.max_memory_allocated``, weights
included; the lmos figure includes its preallocated KV pool, ``kv_pool_mib``).

``--device cpu --tiny``: the same run on a tiny fp32 Qwen2, to test the script without a GPU.
Progress on stderr; the last stdout line is one JSON object.  A run that nears ``--budget``
seconds stops after the current size and says so (``stopped_early``).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput_peers import run_driver  # the same driver-only loop as the CPU peers

QWEN2_05B: dict[str, Any] = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                 max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=1e6)
TINY: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=1024, max_position_embeddings=1024,
                            tie_word_embeddings=False)
GREEDY = dict(do_sample=False, pad_token_id=0)
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def build(args: argparse.Namespace) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = TINY if args.tiny else QWEN2_05B
    # no eos: every peer generates the full length; a wider init spreads the random model's logits
    cfg = Qwen2Config(**shape, initializer_range=0.05, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    with torch.device(args.device):
        model = Qwen2ForCausalLM(cfg)
    return model.to(dtype=dtype).eval()


def draw(rng: random.Random, n: int, vocab: int) -> list[list[int]]:
    lengths = [32 + (60 * i) // max(n - 1, 1) for i in range(n)]
    rng.shuffle(lengths)
    return [[rng.randrange(3, vocab) for _ in range(k)] for k in lengths]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def sequential(model: Any, prompts: list[list[int]], new: int, device: str) -> list[list[int]]:
    import torch

    out = []
    for p in prompts:
        ids = torch.tensor([p], device=device)
        g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, **GREEDY)
        out.append(g[0, len(p):].tolist())
    return out


def padded(model: Any, prompts: list[list[int]], new: int, device: str) -> list[list[int]]:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    g = model.generate(ids, attention_mask=mask, max_new_tokens=new, **GREEDY)
    res: list[list[int]] = g[:, width:].tolist()
    return res


def matches(a: list[list[int]], b: list[list[int]]) -> int:
    return sum(x == y for x, y in zip(a, b, strict=False))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny fp32 model (test the script on CPU)")
    ap.add_argument("--sizes", default="1,16,64,256")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--seq-prompts", type=int, default=4, help="prompts per size for the sequential peer")
    ap.add_argument("--kv-memory", default="", help="the lmos KV pool (default: sized for the largest run)")
    ap.add_argument("--budget", type=float, default=210.0, help="seconds; stop after the size that passes it")
    args = ap.parse_args()
    import anyio
    import torch

    import lmos
    from lmos.drivers.hf import HFDriver

    sizes = [int(x) for x in args.sizes.split(",")]
    new, dev = args.new_tokens, args.device
    log(f"building {'tiny' if args.tiny else 'Qwen2-0.5B-shaped'} random-init model on {dev}")
    model = build(args)
    params = sum(p.numel() for p in model.parameters())
    vocab = int(model.config.vocab_size)
    log(f"model: {params / 1e6:.0f}M parameters, {next(model.parameters()).dtype}")
    rng = random.Random(1)

    # lmos: the driver (on its own copy of the weights: the peers never share state) and a kernel
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    token_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim
    token_bytes *= next(model.parameters()).element_size()
    kv = args.kv_memory or str(int(2 * max(sizes) * (92 + new + 32) * token_bytes) + (64 << 20))
    sync(dev)
    t = time.perf_counter()
    driver = HFDriver(copy.deepcopy(model), block_size=16, kv_memory=kv, max_seqs=max(max(sizes), 64),
                      max_tokens_per_step=4096, threads=torch.get_num_threads())
    sync(dev)
    driver_start = time.perf_counter() - t
    pool_mib = round(driver.limits.num_blocks * driver.pool.block_bytes / 2**20, 1)
    log(f"lmos driver ready in {driver_start:.2f}s (KV pool {pool_mib} MiB, "
        f"max_seqs {driver.limits.max_seqs})")
    gpu = torch.cuda.get_device_name() if dev.startswith("cuda") else None
    result: dict[str, Any] = {"bench": "gpu", "device": dev, "gpu": gpu, "torch": torch.__version__,
                              "params_m": round(params / 1e6, 1),
                              "dtype": str(next(model.parameters()).dtype),
                              "new_tokens": new, "lmos_path": "kernel (Kernel.complete) and driver alone",
                              "driver_start_s": round(driver_start, 3), "kv_pool_mib": pool_mib, "sizes": {}}

    async def run_all() -> None:
        t = time.perf_counter()
        async with lmos.Kernel(model=driver, state_dir=":memory:") as k:
            result["kernel_start_s"] = round(time.perf_counter() - t + driver_start, 3)
            log(f"kernel open: startup {result['kernel_start_s']:.2f}s (driver + kernel)")

            async def batch(prompts: list[list[int]]) -> list[list[int]]:
                res: list[list[int]] = [[] for _ in prompts]

                async def one(i: int) -> None:
                    r = await k.complete(prompts[i], max_tokens=new, temperature=0)
                    res[i] = list(r.token_ids)

                async with anyio.create_task_group() as tg:
                    for i in range(len(prompts)):
                        tg.start_soon(one, i)
                return res

            ids = iter(range(10_000_000, 1 << 40, 1_000_000))  # the driver peer's sequence ids
            for n in sizes:
                if time.perf_counter() - T0 > args.budget:
                    result["stopped_early"] = f"budget of {args.budget:.0f}s reached before size {n}"
                    log(result["stopped_early"])
                    break
                warm, timed = draw(rng, min(n, 16), vocab), draw(rng, n, vocab)
                point: dict[str, Any] = {}
                outs: dict[str, list[list[int]]] = {}
                runs = {
                    "padded": lambda ps: padded(model, ps, new, dev),
                    "lmos": None,
                    "lmos_driver": lambda ps: run_driver(driver, ps, new, next(ids)),
                    "sequential": lambda ps: sequential(model, ps, new, dev),
                }
                for peer, fn in runs.items():
                    ps = timed[: args.seq_prompts] if peer == "sequential" else timed
                    wp = warm[:2] if peer == "sequential" else warm
                    with torch.inference_mode():
                        if fn is None:
                            await batch([p[:40] for p in wp])
                        else:
                            fn([p[:40] for p in wp])
                        sync(dev)
                        reset_peak(dev)
                        t = time.perf_counter()
                        out = await batch(ps) if fn is None else fn(ps)
                        sync(dev)
                        sec = time.perf_counter() - t
                    outs[peer] = out
                    point[f"{peer}_tok_s"] = round(len(ps) * new / sec, 1)
                    point[f"{peer}_peak_mib"] = peak_mib(dev)
                    log(f"{n:>4} requests {peer:>12}: {len(ps) * new / sec:10,.0f} tok/s ({sec:.2f}s)")
                m = len(outs["sequential"])
                for peer in ("lmos", "lmos_driver"):
                    for ref in ("padded", "sequential"):
                        ratio = point[f"{peer}_tok_s"] / point[f"{ref}_tok_s"]
                        point[f"ratio_{peer}_vs_{ref}"] = round(ratio, 3)
                    point[f"{peer}_match_padded"] = f"{matches(outs[peer], outs['padded'])}/{n}"
                    point[f"{peer}_match_sequential"] = f"{matches(outs[peer][:m], outs['sequential'])}/{m}"
                point["padded_match_sequential"] = f"{matches(outs['padded'][:m], outs['sequential'])}/{m}"
                result["sizes"][str(n)] = point
        driver.close()

    try:
        anyio.run(run_all)
    except Exception as exc:  # report what was measured, and why it stopped
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        log(f"FAILED: {result['error']}")
    result["wall_s"] = round(time.perf_counter() - T0, 1)
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
