"""Import karpathy's llama2.c checkpoints (legacy `.bin` export + SentencePiece `.model`) as a Hugging Face
LlamaForCausalLM directory with a working tokenizer.

    hyperfit import-llama2c ../shared/assets/stories260K runs/stories260K-hf

Layout of the legacy export: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
seq_len; a negative vocab_size means an untied classifier follows), then float32 arrays, matrices [out, in]:
embedding, attention norms, wq, wk, wv, wo, ffn norms, w1, w2, w3, final norm, RoPE tables (ignored),
[classifier]. llama2.c rotates interleaved pairs (x0,x1),(x2,x3)...; transformers rotates halves
(x0..x_{d/2-1} with x_{d/2}..), so each head's rows of wq and wk are reordered.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from hyperfit.errors import LlamaImportError as ImportError_  # noqa: F401 - raised here, importable from here
from hyperfit.runs import atomic_dir

MARKER = "hyperfit_import.json"  # written into every import, so a later import knows it may replace the folder


def check_out_dir(out: Path) -> None:
    """Refuse to replace anything but an earlier import: the output folder is swapped whole."""
    if out.exists() and not out.is_dir():
        raise ImportError_(f"{out} is a file; give a new folder (or an earlier import's) as the output")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        held = sorted(p.name for p in out.iterdir())[:5]
        raise ImportError_(f"{out} is not empty (it holds {held}) and is not an earlier hyperfit import, which is the "
                           "only folder an import replaces; choose a new output folder, or move that one")


def find_files(src: Path) -> tuple[Path, Path]:
    """The checkpoint (.bin that is not a tokenizer) and the SentencePiece .model in a directory."""
    if not src.is_dir():
        raise ImportError_(f"{src} is not a directory; "
                           "give the folder holding the llama2.c .bin and its tokenizer .model")
    bins = sorted(p for p in src.glob("*.bin") if not p.name.startswith("tok"))
    models = sorted(src.glob("*.model"))
    if len(bins) != 1 or len(models) != 1:
        raise ImportError_(f"{src} must hold exactly one checkpoint .bin (not tok*.bin) and one tokenizer .model; "
                           f"found checkpoints {[p.name for p in bins]} and tokenizers {[p.name for p in models]}")
    return bins[0], models[0]


def read_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    raw = path.read_bytes()
    if len(raw) < 28:
        raise ImportError_(f"{path} has {len(raw)} bytes: too short for a llama2.c header (28 bytes)")
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hp = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, vocab_size=vocab,
              seq_len=seq_len, shared_classifier=shared)
    if min(dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len) <= 0 or dim % n_heads:
        raise ImportError_(f"{path}: header {hp} is not a valid llama2.c legacy header")
    head = dim // n_heads
    kv_dim = n_kv * head
    shapes = [("embed", (vocab, dim)), ("attn_norm", (n_layers, dim)), ("wq", (n_layers, dim, dim)),
              ("wk", (n_layers, kv_dim, dim)), ("wv", (n_layers, kv_dim, dim)), ("wo", (n_layers, dim, dim)),
              ("ffn_norm", (n_layers, dim)), ("w1", (n_layers, hidden, dim)), ("w2", (n_layers, dim, hidden)),
              ("w3", (n_layers, hidden, dim)), ("norm", (dim,)), ("rope", (2, seq_len, head // 2))]
    if not shared:
        shapes.append(("cls", (vocab, dim)))
    data = np.frombuffer(raw, dtype=np.float32, offset=28)
    need = sum(int(np.prod(s)) for _, s in shapes)
    if data.size != need:
        raise ImportError_(f"{path}: header {hp} implies {need} float32 values after it, the file has {data.size}; "
                           "this is not a llama2.c legacy (version 0) export")
    arrays, pos = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        arrays[name] = data[pos : pos + n].reshape(shape)
        pos += n
    return hp, arrays


def unpermute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's rows from interleaved rotary pairs to halves (transformers' convention).

    Rows of one head [r0, r1, r2, r3] (pairs (r0,r1), (r2,r3)) become [r0, r2, r1, r3].
    """
    out_dim, in_dim = w.shape
    return w.view(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def to_hf_state(hp: dict, a: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    t = lambda x: torch.from_numpy(np.array(x, dtype=np.float32))  # noqa: E731 - copies out of the read-only buffer
    sd = {"model.embed_tokens.weight": t(a["embed"]), "model.norm.weight": t(a["norm"])}
    for i in range(hp["n_layers"]):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = t(a["attn_norm"][i])
        sd[p + "post_attention_layernorm.weight"] = t(a["ffn_norm"][i])
        sd[p + "self_attn.q_proj.weight"] = unpermute_rotary(t(a["wq"][i]), hp["n_heads"])
        sd[p + "self_attn.k_proj.weight"] = unpermute_rotary(t(a["wk"][i]), hp["n_kv_heads"])
        sd[p + "self_attn.v_proj.weight"] = t(a["wv"][i])
        sd[p + "self_attn.o_proj.weight"] = t(a["wo"][i])
        sd[p + "mlp.gate_proj.weight"] = t(a["w1"][i])
        sd[p + "mlp.down_proj.weight"] = t(a["w2"][i])
        sd[p + "mlp.up_proj.weight"] = t(a["w3"][i])
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"] if hp["shared_classifier"] else t(a["cls"])
    return sd


def build_model(hp: dict, state: dict[str, torch.Tensor]):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=hp["vocab_size"], hidden_size=hp["dim"], intermediate_size=hp["hidden_dim"],
        num_hidden_layers=hp["n_layers"], num_attention_heads=hp["n_heads"], num_key_value_heads=hp["n_kv_heads"],
        max_position_embeddings=hp["seq_len"], rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=hp["shared_classifier"], bos_token_id=1, eos_token_id=2, hidden_act="silu",
        attention_dropout=0.0, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    if missing or unexpected:
        raise ImportError_(f"converted weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    return model


def build_tokenizer(model_file: Path):
    """A transformers LlamaTokenizer from a SentencePiece model, adding BOS as llama2.c does."""
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(model_file, Path(tmp) / "tokenizer.model")
        tok = LlamaTokenizer.from_pretrained(tmp, add_bos_token=True, add_eos_token=False, legacy=False)
    return tok


def import_llama2c(src: str | Path, out: str | Path) -> Path:
    """Convert a llama2.c folder (checkpoint .bin + tokenizer .model) to an HF model directory at `out`."""
    src, out = Path(src), Path(out)
    check_out_dir(out)
    ckpt, tok_file = find_files(src)
    hp, arrays = read_checkpoint(ckpt)
    model = build_model(hp, to_hf_state(hp, arrays))
    tok = build_tokenizer(tok_file)
    if len(tok) != hp["vocab_size"]:
        raise ImportError_(f"tokenizer {tok_file.name} has {len(tok)} pieces but {ckpt.name} has vocab_size "
                           f"{hp['vocab_size']}; pair the checkpoint with the tokenizer it was trained with")
    model.generation_config.bos_token_id, model.generation_config.eos_token_id = 1, 2
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        marker = {"source": str(ckpt.resolve()), "written_by": "hyperfit import-llama2c"}
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
    return out
