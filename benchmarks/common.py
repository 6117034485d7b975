"""Shared pieces of the benchmarks: model shapes built from configs (no download), timing, memory."""

from __future__ import annotations

import json
import resource
import time

import torch

# TinyLlama-1.1B's published shape (the paper's smallest model); "tiny" runs anywhere in seconds.
SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=512),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5),
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense bf16 datasheet value, the usual MFU convention


def build_model(size: str, device, dtype=torch.float32, seed: int = 0):
    """A random-init Llama of the named shape, built directly on `device` (same seed → same weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**SIZES[size], attn_implementation="sdpa"))
    return model.to(dtype)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()  # timing boundary only: the loops themselves never sync


def now(device) -> float:
    sync(device)
    return time.perf_counter()


def reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float:
    """Peak GPU memory since reset_peak; on CPU the process's max RSS (never resets)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_kind(device) -> str:
    """What peak_gib measures, stored beside it in the JSON (the two are not comparable)."""
    return "torch.cuda.max_memory_allocated" if torch.device(device).type == "cuda" else "process max RSS (CPU)"


def peak_note(device) -> str:
    """The footnote under a table's "peak GiB" column. On CPU the max RSS never resets, so a row's peak
    includes every row run before it in the process: only the first row's (or a rise) means much."""
    if torch.device(device).type == "cuda":
        return "peak GiB: torch.cuda.max_memory_allocated, reset before each row"
    return ("peak GiB: process max RSS (CPU), which never resets: each row includes every row before it "
            "(and the process's own memory)")


def peak_flops(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def device_name(device) -> str:
    return torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu"


def dump(path, obj) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)


def kernel_table(fn, device, row_limit: int = 15) -> str:
    """Run fn() once under torch.profiler; the ops/kernels that took the most device time (CPU time on a
    CPU), as profiler's table. Says where a step's time goes, before choosing the next lever."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(device)
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    key = "cuda_time_total" if cuda else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=row_limit, max_name_column_width=60)
