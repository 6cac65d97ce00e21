"""The physical KV pool: preallocated per-layer key/value tensors cut into blocks.

Memory is reserved once, at driver start, from a budget ("512MiB", or a
fraction of the free memory of the device), the way an OS sizes its page-frame
table at boot: no allocation happens in the step path, and the number of
blocks is a hard, known limit the scheduler plans against.

Layout: per layer, one key and one value tensor of shape
``[num_blocks * block_size, kv_heads, head_dim]``.  A token's *slot* is
``block * block_size + offset``, so writing new KV is one ``index_copy_`` and
reading a sequence's KV is one gather by slot index, whatever the blocks'
order.  Host swap copies are plain CPU tensors (pinned on CUDA so the copies
can use DMA), one per swapped sequence, counted against a swap budget.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmos.config import parse_bytes
from lmos.errors import Errno, SyscallError

if TYPE_CHECKING:
    import torch

CPU_FRACTION_CAP = 8 * 2**30  # a fraction of host RAM never reserves more than this


@dataclass(frozen=True)
class KVShape:
    num_layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int

    def bytes_per_token(self) -> int:
        """Key plus value bytes of one token over all layers."""
        return 2 * self.num_layers * self.kv_heads * self.head_dim * self.dtype_bytes


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (CUDA: free device memory; CPU: available RAM)."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def budget_bytes(spec: str, device: torch.device) -> int:
    """Resolve a memory budget: absolute ("512MiB", "1e9") or a fraction ("0.5").

    A bare number ≤ 1 is a fraction of what is available now.  On CPU the
    fraction is capped (``CPU_FRACTION_CAP``): host RAM is shared with
    everything else on the machine, unlike a dedicated accelerator.
    """
    text = spec.strip()
    try:
        value = float(text)
    except ValueError:
        return parse_bytes(text)
    if value <= 0:
        raise SyscallError(Errno.EINVAL, f"bad KV memory budget {spec!r}")
    if value <= 1:
        avail = available_memory(device)
        budget = int(avail * value)
        return min(budget, CPU_FRACTION_CAP) if device.type == "cpu" else budget
    return int(value)


class KVPool:
    """Per-layer key/value block tensors plus the host swap space."""

    def __init__(
        self,
        shape: KVShape,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
        swap_bytes: int,
    ) -> None:
        import torch

        self.shape = shape
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.device = device
        self.dtype = dtype
        slots = num_blocks * block_size
        dims = (slots, shape.kv_heads, shape.head_dim)
        # Padded gathers read slots nobody wrote, and a garbage NaN there would leak through the
        # masked softmax (0 * NaN is NaN), so every block must hold finite values before it is read.
        # On CUDA a memset of the whole pool is instant; on CPU it would touch every page of a
        # budget that may never be used, so blocks are cleared on first allocation instead.
        self.lazy_zero = device.type == "cpu"
        make = torch.empty if self.lazy_zero else torch.zeros
        self.keys = [make(dims, device=device, dtype=dtype) for _ in range(shape.num_layers)]
        self.values = [make(dims, device=device, dtype=dtype) for _ in range(shape.num_layers)]
        self.block_bytes = shape.bytes_per_token() * block_size
        self.swap_capacity = swap_bytes
        self.swap_used = 0
        self._pin = device.type == "cuda"
        # measured device->host->device bandwidth (bytes/s), refined by real swaps
        self.swap_bandwidth = 10e9 if device.type == "cuda" else 4e9

    def _slots(self, blocks: list[int]) -> torch.Tensor:
        import torch

        b = torch.tensor(blocks, dtype=torch.long)
        offs = torch.arange(self.block_size, dtype=torch.long)
        return (b[:, None] * self.block_size + offs[None, :]).reshape(-1).to(self.device)

    # ---------------------------------------------------------------- copies
    def zero_blocks(self, blocks: list[int]) -> None:
        """Clear never-written blocks (see ``lazy_zero``)."""
        if blocks and self.lazy_zero:
            slots = self._slots(blocks)
            for layer in self.keys + self.values:
                layer.index_fill_(0, slots, 0.0)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Device-side block copies (copy-on-write): ``dst <- src`` for each pair."""
        if not pairs:
            return
        src = self._slots([s for s, _ in pairs])
        dst = self._slots([d for _, d in pairs])
        for layer in self.keys + self.values:
            layer.index_copy_(0, dst, layer.index_select(0, src))

    def to_host(self, blocks: list[int]) -> torch.Tensor:
        """Copy ``blocks`` to one host tensor ``[layers, 2, n*block_size, heads, dim]``."""
        import torch

        nbytes = len(blocks) * self.block_bytes
        if self.swap_used + nbytes > self.swap_capacity:
            raise SyscallError(Errno.ENOMEM, "host swap space exhausted")
        start = time.perf_counter()
        slots = self._slots(blocks)
        n = slots.numel()
        host = torch.empty(
            (self.shape.num_layers, 2, n, self.shape.kv_heads, self.shape.head_dim),
            dtype=self.dtype,
            pin_memory=self._pin,
        )
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            host[i, 0].copy_(k.index_select(0, slots), non_blocking=self._pin)
            host[i, 1].copy_(v.index_select(0, slots), non_blocking=self._pin)
        if self._pin:
            torch.cuda.synchronize(self.device)
        self.swap_used += nbytes
        self._observe(nbytes, time.perf_counter() - start)
        return host

    def from_host(self, host: torch.Tensor, pairs: list[tuple[int, int]]) -> None:
        """Copy host blocks back: ``pairs`` of (index in ``host``, device block)."""
        import torch

        if not pairs:
            return
        start = time.perf_counter()
        bs = self.block_size
        src = torch.tensor([i for i, _ in pairs], dtype=torch.long)
        src = (src[:, None] * bs + torch.arange(bs)[None, :]).reshape(-1)
        dst = self._slots([d for _, d in pairs])
        chunk = host.index_select(2, src).to(self.device, non_blocking=self._pin)
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            k.index_copy_(0, dst, chunk[i, 0])
            v.index_copy_(0, dst, chunk[i, 1])
        if self._pin:
            torch.cuda.synchronize(self.device)
        self._observe(len(pairs) * self.block_bytes, time.perf_counter() - start)

    def release_host(self, host: torch.Tensor | None, shared: bool = False) -> None:
        """Return a host copy's bytes to the swap budget (unless another holder remains)."""
        if host is not None and not shared:
            self.swap_used = max(self.swap_used - host.numel() * host.element_size(), 0)

    def _observe(self, nbytes: int, seconds: float) -> None:
        if seconds > 0 and nbytes >= 1 << 16:  # tiny copies measure overhead, not bandwidth
            self.swap_bandwidth = 0.8 * self.swap_bandwidth + 0.2 * (nbytes / seconds)
