"""Contrastive search with the KV cache (hyperfit.decoding.contrastive) vs recomputing everything each step.

    PYTHONPATH=src python benchmarks/contrastive_cache.py [MODEL_DIR] [--contexts 8] [--tokens 64]

MODEL_DIR defaults to a random Llama of stories260K's shape built in-process. The baseline is the
from-scratch algorithm (a full forward pass of the whole sequence per candidate, as in the unit test's
reference), run in the same process on the same contexts; the script checks both give the same tokens
and prints the speed ratio.
"""

from __future__ import annotations

import argparse
import time

import torch


def from_scratch(model, ctx, steps, alpha, k):
    seq = list(ctx)
    for _ in range(steps):
        probs = model(input_ids=torch.tensor([seq])).logits[0, -1].float().softmax(-1)
        top = probs.topk(k)
        cands = torch.tensor([seq + [v] for v in top.indices.tolist()])
        hidden = model(input_ids=cands, output_hidden_states=True).hidden_states[-1].float()  # [k, T+1, D]
        cos = torch.nn.functional.cosine_similarity(hidden[:, -1:], hidden[:, :-1], dim=-1).max(-1).values
        seq.append(top.indices[((1 - alpha) * top.values - alpha * cos).argmax()].item())
    return seq[len(ctx):]


def main() -> None:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from hyperfit.decoding.contrastive import contrastive_search

    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--contexts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    args = p.parse_args()
    torch.manual_seed(0)
    if args.model:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model)
    else:  # stories260K's shape: dim 64, 5 layers, 8 heads (4 kv), vocab 512
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=5,
                                             num_attention_heads=8, num_key_value_heads=4, vocab_size=512,
                                             max_position_embeddings=512))
    model.eval()
    vocab = model.config.vocab_size
    contexts = [torch.randint(3, vocab, (32,)).tolist() for _ in range(args.contexts)]
    gen = GenerationConfig(max_new_tokens=args.tokens, min_new_tokens=args.tokens, eos_token_id=2, pad_token_id=0)
    with torch.no_grad():
        t0 = time.perf_counter()
        fast = contrastive_search(model, contexts, gen, 0.6, 4, batch_size=len(contexts))
        t1 = time.perf_counter()
        slow = [from_scratch(model, c, args.tokens, 0.6, 4) for c in contexts]
        t2 = time.perf_counter()
    same = sum(a == b for a, b in zip(fast, slow))
    print(f"{args.contexts} contexts × {args.tokens} tokens, torch threads {torch.get_num_threads()}: cached "
          f"{t1 - t0:.2f} s, from scratch {t2 - t1:.2f} s, ratio {(t2 - t1) / (t1 - t0):.1f}× "
          f"({same}/{len(contexts)} continuations identical)")


if __name__ == "__main__":
    main()
