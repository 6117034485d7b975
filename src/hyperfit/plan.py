"""`hyperfit plan MODEL`: how much memory hyperfitting MODEL takes, per strategy, and how many GPUs.

    hyperfit plan llama-3.1-70b                  # a known shape, offline
    hyperfit plan TinyLlama/TinyLlama_v1.1       # any hub id or local folder: only its config.json is read
    hyperfit plan llama-3.1-8b --gpu-gb 141 --checkpointing

Counts come from the model's config alone: the model is built on the meta device (no memory, no
weights), so the parameter count is exact for any architecture transformers knows. Memory per
parameter is the paper's recipe with fp32 master weights: 4 B weights + 4 B gradients + 8 B AdamW
moments = 16 B. Activations are an estimate (Korthikanti et al., 2022, with fused attention: ~34 bytes ×
tokens × hidden per layer in bf16, plus fp32 logits for the loss); treat the table as a plan, and
`benchmarks/train_step.py` as the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
# Published shapes (config.json of each hub model), so the table prints without the hub.
PRESETS = {
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000),
    "deepseek-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=30, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=102400),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256),
    "llama-3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                          num_key_value_heads=8, vocab_size=128256),
}
STATE_BYTES = 16     # per parameter: fp32 weight 4 + fp32 grad 4 + AdamW exp_avg 4 + exp_avg_sq 4
OVERHEAD = 2 * GIB   # per GPU: CUDA context, cuBLAS workspaces, allocator slack
STRATEGIES = ("single_gpu", "ddp", "fsdp2", "zero3_offload")


@dataclass(frozen=True)
class Shape:
    params: int
    layers: int
    hidden: int
    vocab: int

    @property
    def layer_params(self) -> int:
        return self.params // max(self.layers, 1)


def model_config(name: str):
    """A transformers config: preset name, or AutoConfig of a hub id / local folder."""
    if name in PRESETS:
        from transformers import LlamaConfig

        return LlamaConfig(**PRESETS[name])
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except OSError as e:
        raise KeyError(f"model {name!r} is neither a preset ({', '.join(PRESETS)}) nor a loadable hub id / folder "
                       f"with config.json ({e}). Use a preset offline, or set HF_HUB_OFFLINE=0") from e


def shape_of(config) -> Shape:
    """Exact parameter count by building the model on the meta device (allocates nothing)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config(decoder=True)
    return Shape(params=sum(p.numel() for p in model.parameters()), layers=text.num_hidden_layers,
                 hidden=text.hidden_size, vocab=text.vocab_size)


def activation_bytes(s: Shape, samples: int, seq: int, checkpointing: bool) -> int:
    """Activations kept for backward on one GPU holding `samples` sequences (estimate)."""
    tokens = samples * seq
    per_layer = 34 * tokens * s.hidden
    kept = (2 * tokens * s.hidden * s.layers + per_layer) if checkpointing else per_layer * s.layers
    logits = tokens * s.vocab * (2 + 4 + 4)  # bf16 logits, fp32 copy, fp32 gradient
    return kept + logits


def per_gpu(s: Shape, strategy: str, ranks: int, batch: int, seq: int, checkpointing: bool) -> tuple[int, int]:
    """(bytes on each GPU, bytes of host memory in total) for `strategy` over `ranks` GPUs."""
    act = activation_bytes(s, batch // ranks, seq, checkpointing)
    if strategy in ("single_gpu", "ddp"):
        return STATE_BYTES * s.params + act + OVERHEAD, 0
    gathered = 2 * 2 * s.layer_params  # bf16 copy of one layer being used + one prefetched
    if strategy == "fsdp2":
        return STATE_BYTES * s.params // ranks + gathered + act + OVERHEAD, 0
    # ZeRO-3 offload: bf16 weights + bf16 grads sharded on GPU; fp32 masters + moments (12 B) on the host.
    return 4 * s.params // ranks + gathered + act + OVERHEAD, 12 * s.params


def table(s: Shape, gpu_gb: float = 80, batch: int = 8, seq: int = 256, checkpointing: bool = False) -> list[dict]:
    """For each strategy, the fewest GPUs (a divisor of the batch) whose memory fits, or the closest miss."""
    rows = []
    for strategy in STRATEGIES:
        options = [1] if strategy == "single_gpu" else [r for r in range(2, batch + 1) if batch % r == 0]
        fits = None
        for r in options:
            gpu, host = per_gpu(s, strategy, r, batch, seq, checkpointing)
            if gpu <= gpu_gb * GIB:
                fits = (r, gpu, host)
                break
        r, gpu, host = fits or (options[-1], *per_gpu(s, strategy, options[-1], batch, seq, checkpointing))
        rows.append({"strategy": strategy, "gpus": r if fits else None, "ranks_tried": options[-1],
                     "per_gpu_gib": gpu / GIB, "host_gib": host / GIB})
    return rows


def render(name: str, s: Shape, rows: list[dict], gpu_gb: float, batch: int, seq: int, checkpointing: bool) -> str:
    lines = [f"{name}: {s.params / 1e9:.2f} B parameters, {s.layers} layers, hidden {s.hidden}, vocab {s.vocab}",
             f"training state {STATE_BYTES} B/param (fp32 weights + grads + AdamW) = {STATE_BYTES * s.params / GIB:,.1f} GiB; "
             f"batch {batch} × {seq} tokens; activation checkpointing {'on' if checkpointing else 'off'}",
             f"{'strategy':14s} {'per-GPU GiB':>12s} {'host GiB':>9s}  GPUs of {gpu_gb:g} GB needed"]
    for r in rows:
        need = (str(r["gpus"]) if r["gpus"] else
                f"does not fit (at {r['ranks_tried']}, the most ranks a batch of {batch} allows)")
        lines.append(f"{r['strategy']:14s} {r['per_gpu_gib']:12,.1f} {r['host_gib']:9,.0f}  {need}")
    lines.append("Launch: accelerate launch --config_file configs/accelerate/<strategy>.yaml -m hyperfit train RUN_DIR")
    return "\n".join(lines)


def plan(name: str, gpu_gb: float = 80, batch: int = 8, seq: int = 256, checkpointing: bool = False) -> str:
    s = shape_of(model_config(name))
    return render(name, s, table(s, gpu_gb, batch, seq, checkpointing), gpu_gb, batch, seq, checkpointing)

