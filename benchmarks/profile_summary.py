"""Where GPU time goes, from the torch profiler: the ``--profile`` option of the GPU benchmarks.

``profiled(path)`` records the CUDA kernels that run during its block and then writes to ``path``
the top kernels by GPU time and the shares of the block's wall time spent in attention kernels,
matrix multiplications (GEMMs), communication (NCCL), other GPU kernels, and with no kernel
running at all (Python, the CPU side of the engine and the trainer, waits). Kernels inside CUDA
graphs (vLLM's decode steps unless ``enforce_eager``) are counted, as the profiler sees them. CPU
activity is not recorded: every autograd op of a training step made summarising take over 8
minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Substrings of kernel names (lower case) by kind; the first kind that matches wins.
KINDS = {
    "communication": ("nccl", "allreduce", "all_reduce", "allgather", "reduce_scatter"),
    "attention": ("attn", "attention", "flash", "fmha", "paged"),
    "GEMM": ("gemm", "matmul", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "wgmma"),
}


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, keys in KINDS.items() if any(k in name for k in keys)), "other")


@contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    """Profiles the block into a summary at ``path`` (nothing when ``path`` is None)."""
    if path is None:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        yield
    wall_us = (time.perf_counter() - started) * 1e6
    kernels = [e for e in profiler.key_averages() if e.device_type.name == "CUDA"]
    by_kind = dict.fromkeys([*KINDS, "other"], 0.0)
    for event in kernels:
        by_kind[kind_of(event.key)] += event.self_device_time_total
    busy = sum(by_kind.values())
    lines = [f"profiled block: {wall_us / 1e6:.1f} s wall, GPU kernels {busy / 1e6:.1f} s "
             f"({busy / wall_us:.0%} of wall; kernels of concurrent streams add up)", ""]
    lines += [f"{kind:>14}: {time_us / 1e6:8.2f} s  {time_us / wall_us:6.1%} of wall"
              for kind, time_us in by_kind.items()]
    lines.append(f"{'no kernel':>14}: {max(wall_us - busy, 0) / 1e6:8.2f} s  "
                 f"{max(wall_us - busy, 0) / wall_us:6.1%} of wall (Python, CPU work, waits)")
    lines += ["", "top kernels by GPU time:"]
    for event in sorted(kernels, key=lambda e: -e.self_device_time_total)[:15]:
        lines.append(f"  {event.self_device_time_total / 1e6:8.3f} s  {event.count:>7} calls  "
                     f"[{kind_of(event.key)}] {event.key[:110]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"\nprofile ({path}):\n" + "\n".join(lines[:8]))
