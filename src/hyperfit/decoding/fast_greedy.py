"""Fast greedy decoding: a static KV cache and one decode step replayed N times.

    dec = GreedyDecoder(model, batch_size=32, context_len=32, max_new_tokens=256, ban_ids=[eos])
    new_tokens = dec(ids)                      # LongTensor[B, 256]; in fp32 the tokens of generate(do_sample=False)

Why not `model.generate()`: for a 1.1B model it spends most of its time in Python and kernel launches
(H200, bf16, 32 contexts × 256 tokens: 16.6 s on a first call, 6.3 s on a later one with the citation
blocker, against 1.5 s for this loop as a CUDA graph and 0.75 s compiled; benchmarks/generate.py,
docs/speed.md). Every context of a hyperfit run has exactly data.context_len tokens, so the batch has one
static shape; the decode step can then be recorded once as a CUDA graph and replayed with no host work and
no device-to-host sync per token.

Modes (`mode=`):
  eager    static-cache loop, plain PyTorch: the CPU path, and the reference for the others.
  graph    the decode step (forward + EOS ban + argmax + write of the next token) captured with
           torch.cuda.CUDAGraph on the eager model: no compiler, capture takes one forward.
  compile  the same step through torch.compile(mode="reduce-overhead") (inductor kernels + CUDA graphs);
           costs a compile (tens of seconds for 1B) per process.
  auto     graph on CUDA, eager elsewhere (see benchmarks/generate.py for the measurements behind it);
           eager for sliding-window models (Mistral, Gemma, Phi-3), whose cache cannot be recorded.
Attention must be sdpa or eager (the loop passes no mask; flash attention would read the empty cache slots).

A logits processor `(input_ids, logits) -> logits` (the same signature as a transformers LogitsProcessor,
e.g. the citation blocker) runs between the recorded forward and the argmax, on the tokens so far. It
is called eagerly each step; it must not sync with the host if it is to stay fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Optional

import torch

from hyperfit.models import cache_argument

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MODES = ("auto", "eager", "graph", "compile")


class GreedyDecoder:
    """Greedy continuation of batches of equal-length contexts, shapes fixed at construction."""

    def __init__(self, model, batch_size: int, context_len: int, max_new_tokens: int,
                 ban_ids: Sequence[int] = (), processor: Optional[Processor] = None, mode: str = "auto"):
        from transformers import StaticCache

        if mode not in MODES:
            raise ValueError(f"mode={mode!r} must be one of {', '.join(MODES)}")
        check_attention(model)
        self.model, self.processor = model, processor
        self.B, self.T, self.N = batch_size, context_len, max_new_tokens
        self.device = next(model.parameters()).device
        self.cache = StaticCache(config=model.config, max_cache_len=context_len + max_new_tokens)
        self.mode = resolve_mode(mode, self.device, recordable(self.cache))
        # The cache keyword and whether forward takes cache_position differ between transformers versions.
        self.cache_kw = cache_argument(model)
        self.pass_position = "cache_position" in inspect.signature(type(model).forward).parameters
        # Static buffers: the step reads and writes only these, so a recorded graph stays valid.
        self.tokens = torch.zeros(batch_size, context_len + max_new_tokens, dtype=torch.long, device=self.device)
        self.cur = torch.zeros((), dtype=torch.long, device=self.device)  # index of the next token to write
        vocab = model.get_output_embeddings().weight.shape[0]
        self.ban = torch.zeros(vocab, device=self.device)
        self.ban[list(ban_ids)] = float("-inf")  # adding -inf = transformers' MinNewTokens processor
        self._graph, self._compiled, self._logits = None, None, None

    # -- one step -------------------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        kw = {self.cache_kw: self.cache, "use_cache": True}
        if self.pass_position:
            kw["cache_position"] = position
        logits = self.model(input_ids=ids, **kw).logits[:, -1]
        return logits.float() + self.ban  # fp32 scores, as generate() uses

    def _pick(self, logits: torch.Tensor) -> None:
        """argmax → tokens[:, cur]; cur += 1. Device ops only: no host sync."""
        if self.processor is not None:
            # The processor sees the tokens so far, like generate()'s input_ids. `width` is known on the host.
            logits = self.processor(self.tokens[:, : self._width], logits)
        nxt = logits.argmax(-1)
        self.tokens.index_copy_(1, self.cur.view(1), nxt.view(-1, 1))
        self.cur.add_(1)

    def _step(self) -> torch.Tensor:
        """Feed the last written token; return its fp32 next-token scores."""
        position = (self.cur - 1).view(1)
        return self._forward(self.tokens.index_select(1, position), position)

    def _step_and_pick(self) -> None:
        self._pick(self._step())

    # -- recording ------------------------------------------------------------------------------------------
    def _record(self) -> None:
        """Capture the decode step once (after a warm-up on a side stream, as CUDA graphs require)."""
        body = self._step if self.processor is not None else self._step_and_pick
        if self.mode == "compile":
            for t in (self.tokens, self.cur):
                torch._dynamo.mark_static_address(t)
            self._compiled = torch.compile(body, mode="reduce-overhead", fullgraph=False)
            return
        saved_cur, saved_tokens = self.cur.clone(), self.tokens.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: lazy inits, cuBLAS workspaces
                body()
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._logits = body()
        # The warm-up and the capture wrote the cache and buffers; the caller restarts from a fresh prefill.
        self.cur.copy_(saved_cur)
        self.tokens.copy_(saved_tokens)

    def _run_step(self) -> None:
        if self.mode == "eager":
            self._step_and_pick() if self.processor is None else self._pick(self._step())
        elif self.mode == "compile":
            out = self._compiled()
            if self.processor is not None:
                self._pick(out)
        else:
            self._graph.replay()
            if self.processor is not None:
                self._pick(self._logits)

    # -- public ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """New tokens (LongTensor[B, max_new_tokens]) for contexts `ids` (LongTensor[B, context_len]).

        Decodes in the model's own dtype, with any surrounding autocast switched off: a static cache holds
        keys and values in one dtype, but under bf16 autocast an fp32 model's rotary embedding returns fp32
        keys beside bf16 values (training probes run inside autocast)."""
        if tuple(ids.shape) != (self.B, self.T):
            raise ValueError(f"contexts of shape {tuple(ids.shape)}; this decoder was built for ({self.B}, {self.T})")
        with torch.autocast(self.device.type, enabled=False):
            return self._decode(ids)

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:
        if self.mode != "eager" and self._graph is None and self._compiled is None:
            self._prefill(ids)  # gives the recording real cache contents to warm up on
            self._record()
        self._prefill(ids)
        for i in range(1, self.N):
            self._width = self.T + i
            self._run_step()
        return self.tokens[:, self.T :].clone()

    def _prefill(self, ids: torch.Tensor) -> None:
        self.cache.reset()  # zeroes the cache in place: recorded addresses stay valid
        self.tokens.zero_()
        self.tokens[:, : self.T] = ids
        self.cur.fill_(self.T)
        self._width = self.T
        self._pick(self._forward(ids, torch.arange(self.T, device=self.device)))


ATTENTION = ("sdpa", "eager")  # implementations that read the static cache through the mask it builds


def check_attention(model) -> None:
    """Refuse attention kernels the loop would feed wrongly: given no attention mask, flash attention
    attends over every slot of the static cache, the empty future ones included (transformers trims the
    keys only for a 2-D mask)."""
    kind = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if kind not in ATTENTION:
        raise ValueError(f"the fast greedy loop needs attn_implementation {' or '.join(ATTENTION)}; this model "
                         f"uses {kind!r}. Decode with generate() (generate.fast=false) or load it with sdpa")


def recordable(cache) -> bool:
    """Whether a decode step over `cache` can be recorded once and replayed. Sliding-window layers (Mistral,
    Gemma, Phi-3) keep their fill level as a Python int: a CUDA graph would replay the capture step's
    position and mask at every token (wrong tokens, or an out-of-range index_copy_)."""
    return not any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", ()))


def resolve_mode(mode: str, device: torch.device, can_record: bool) -> str:
    """`auto` → graph on CUDA when the cache can be recorded, else eager; graph/compile refused where they
    cannot run (off CUDA, or a cache that cannot be recorded)."""
    if mode == "auto":
        return "graph" if device.type == "cuda" and can_record else "eager"
    if mode != "eager" and device.type != "cuda":
        raise ValueError(f"mode={mode!r} needs a CUDA model; this one is on {device}. Use mode='eager'")
    if mode != "eager" and not can_record:
        raise ValueError(f"mode={mode!r} records the decode step, but this model has sliding-window attention, "
                         "whose cache keeps its length on the host; a recording would replay one position. "
                         "Use mode='eager' (or 'auto')")
    return mode


def fast_greedy_applies(gen_config, contexts: Sequence[Sequence[int]]) -> bool:
    """True when `gen_config` is plain greedy (nothing GreedyDecoder does not reproduce) and all contexts
    have one length; otherwise hyperfit.decoding.loops falls back to generate()."""
    plain = (not gen_config.do_sample and gen_config.num_beams == 1
             and gen_config.repetition_penalty in (None, 1.0) and not gen_config.no_repeat_ngram_size
             and not gen_config.bad_words_ids and not gen_config.suppress_tokens
             and not gen_config.begin_suppress_tokens and not gen_config.sequence_bias
             and not getattr(gen_config, "forced_eos_token_id", None)
             and not getattr(gen_config, "forced_bos_token_id", None))
    # generate() bans EOS for the first min_new_tokens steps only; the decoder bans it always or never.
    partial_ban = bool(gen_config.min_new_tokens) and gen_config.min_new_tokens < gen_config.max_new_tokens
    return plain and not partial_ban and len({len(c) for c in contexts}) == 1

