"""The configuration's shape: one frozen dataclass per section, each field with its default and its help.

    hyperfit run --help                     # every field below, with its default and docstring
    hyperfit run configs/paper.yaml train.lr=1e-4 data.num_train=64

Each field's docstring (the string literal under it) is the only copy of its help text: `hyperfit run
--help` reads them from this file's source (`hyperfit.config.helptext`). Defaults are the paper's values
(Carlsson et al., 2025, §3): 2000 sequences × 256 tokens, 20 epochs, Adam lr 1e-6 constant, weight decay
0, batch 8, greedy decoding. Reading YAML and overrides is `load.py`; ranges and contradictions `checks.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class DataConfig:
    source: str = ""
    """Required. Text source: a .txt file (documents separated by blank lines), a .jsonl/.csv/.parquet file with a
    text column (see text_field), or a Hugging Face datasets id (needs `pip install datasets`)."""
    text_field: str = "text"
    """Column holding the document text, for .jsonl/.csv/.parquet files and datasets ids."""
    hf_config: Optional[str] = None
    """Dataset configuration name, for a Hugging Face datasets id."""
    split: str = "train"
    """Dataset split, for a Hugging Face datasets id."""
    seq_len: int = 256
    """Tokens per training sample (paper: 256, BOS included when the tokenizer adds one). Documents with
    fewer tokens are skipped; longer ones are truncated."""
    num_train: int = 2000
    """Number of training samples, drawn at random (seeded) from qualifying documents (paper: 2000)."""
    num_val: int = 200
    """Held-out validation sequences (seq_len tokens each) for loss, perplexity and entropy probes."""
    num_contexts: int = 200
    """Held-out generation contexts; the rest of each document is kept as the human continuation. Ignored when
    data.contexts names the evaluation set."""
    context_len: int = 32
    """Tokens of each held-out document given to the model as context (paper: 32)."""
    max_documents: Optional[int] = None
    """Read at most this many documents from the source (None: all). Useful for huge datasets."""
    seed: int = 0
    """Seed for the random choice of training, validation and context documents."""
    # Real text as users have it (books, wikis, web dumps): see docs/data.md.
    samples_per_document: int = 1
    """Up to this many non-overlapping seq_len-token samples from each long document (a book stored as a few
    long rows). Training, validation and contexts still come from disjoint documents; a context document gives
    one context."""
    repair_text: bool = True
    """Repair broken encodings (mojibake such as 'â€™') with ftfy; documents changed are counted in
    data/report.md."""
    strip_boilerplate: str = "auto"
    """auto: remove the Project Gutenberg header, footer and licence (found by Gutenberg's '*** START OF' and
    '*** END OF' lines); none: keep the text as it is."""
    reflow: str = "auto"
    """Hard-wrapped paragraphs (a newline every ~70 characters): auto joins their lines when most lines end
    near one width ≤ 100; always joins the lines of every paragraph; none keeps them."""
    markup: str = "auto"
    """Source markup to undo: auto detects WikiText's tokenised form (' @-@ ', ' , ', ' = Title = ') and
    detokenizes it; wikitext always does; none keeps the text."""
    unknown_marker: str = "drop"
    """What to do with '<unk>' markers in the text (WikiText's unknown words): drop them, keep them as text,
    or replace them with U+FFFD ('�'). Special-token strings are always tokenized as text, never as control
    ids."""
    language: Optional[str] = "en"
    """Language of the text (ISO 639 code): the non-word rate checks words against wordfreq's most frequent
    words of this language plus the source's own words; None: the source's own words only."""
    chat_template: bool = False
    """Wrap each document in the tokenizer's chat template before it is tokenized (its first sentence as the
    user turn, the rest as the assistant's answer), so an instruct model is hyperfitted on text in the format
    it was tuned on. Needs a tokenizer with a chat template."""
    # Images (hyperfit.images) ----------------------------------------------------------------------------
    kind: str = "auto"
    """text or images; auto: images when data.source is a folder, a .npy file or an MNIST IDX file (a Hugging
    Face image dataset needs data.kind=images). Images set seq_len and context_len from their size."""
    image_size: Optional[int] = None
    """Resize every image to this many pixels square (None: keep the size, which must then be the same for
    all images; a hub ImageGPT wants its own size, 32)."""
    image_field: str = "image"
    """Column holding the image, for a Hugging Face image dataset."""
    contexts: tuple[dict[str, Any], ...] = ()
    """Evaluation contexts as text, from named sources, in place of held-out documents of data.source: a list of
    {source, count, domain}, e.g. [{source: wiki.txt, count: 100, domain: wikipedia}] (source: a file or datasets
    id, read as data.source is; count: documents drawn, seeded; domain: the name metrics are grouped by, default
    the source's file stem; optional text_field, split, hf_config, max_documents). Stored in the run as text
    (data/contexts.jsonl with a sha256 per context and one for the set) and tokenized by each model's own
    tokenizer, so every model continues the same text. A document whose text occurs in a training document is
    skipped (data/manifest.json counts them). Empty: held-out documents of data.source (data.num_contexts)."""
    context_words: int = 24
    """With data.contexts: words of each document given as the context, the rest being the human continuation
    (the paper's 32-token contexts are about 24 words for Llama tokenizers); a count of words, not tokens, so
    the context is the same text for every tokenizer."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"
    """Hugging Face hub id or local directory of a causal LM (paper: TinyLlama 1.1B, DeepSeek 7B,
    Llama 3.1 8B/70B). `hyperfit import-llama2c` converts llama2.c checkpoints to such a directory."""
    revision: Optional[str] = None
    """Hub revision (branch, tag or commit) to load."""
    dtype: str = "float32"
    """Dtype of the trainable weights: float32 (the master weights; compute runs in bf16 autocast on GPU),
    bfloat16 or float16 (refused by the precision guard when updates of size lr would round away)."""
    trust_remote_code: bool = False
    """Allow model code from the hub repository (only for models that need it)."""
    attn_implementation: Optional[str] = None
    """Attention kernel passed to transformers (e.g. sdpa, eager, flash_attention_2); None: its default."""
    # Image models and models built here ---------------------------------------------------------------------
    arch: str = "auto"
    """causal_lm (AutoModelForCausalLM), imagegpt (ImageGPTForCausalImageModeling), or auto: from the model's
    config (model_type imagegpt → imagegpt)."""
    init: str = "pretrained"
    """pretrained: load model.name; scratch: build a new model from model.config (randomly initialised, seeded by
    train.seed), to pretrain a small base model here; model.name is then ignored."""
    config: dict[str, Any] = field(default_factory=dict)
    """For model.init=scratch: model_type (imagegpt or llama) and sizes, e.g. {model_type: imagegpt, n_embd: 64,
    n_layer: 4, n_head: 4}; vocab_size and positions follow from the data (colour clusters + 1, pixels + 1)."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    """Passes over the training samples (paper: 20, i.e. 5,000 updates for 2000 samples at batch 8). Ignored
    when train.updates is set."""
    updates: Optional[int] = None
    """Train for exactly this many optimizer updates; train.epochs is then ignored (updates wins, so a sweep
    may set it over a base config that sets epochs). The epochs follow: samples // batch_size updates each,
    the last one partial when updates does not divide, in the same seeded order a full epoch has. Probes and
    checkpoints then count updates: train.probe_every_updates, train.save_every_updates (paper's data-quantity
    study: 5,000 updates at 2000 … 8 samples). None: train for train.epochs."""
    lr: float = 1e-6
    """Learning rate, constant (paper: 1e-6 for 1B+ models; a 260K-parameter model needs ~1e-4–1e-3)."""
    weight_decay: float = 0.0
    """AdamW weight decay (paper: 0)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    batch_size: int = 8
    """Global batch size in samples per update, whatever the number of devices (paper: 8)."""
    grad_accum: int = 1
    """Micro-batches per update on each device; batch_size must divide by devices × grad_accum."""
    max_grad_norm: Optional[float] = None
    """Clip the gradient norm to this value (paper: no clipping)."""
    precision: str = "auto"
    """Compute precision: auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp16 or no. Weights stay
    fp32 either way (see model.dtype)."""
    seed: int = 0
    """Seed for weight-independent randomness: data order per epoch and RNG state."""
    stop_at_loss: Optional[float] = None
    """Stop after the epoch whose mean training loss is at or below this value (None: run all epochs)."""
    probe_every: int = 1
    """Run the probes (val loss, entropy, greedy TTR, examples) every this many epochs, and at epoch 0
    before training. 0 turns probes off, under train.updates too unless train.probe_every_updates is set."""
    probe_contexts: int = 32
    """Held-out contexts continued greedily in each probe (greedy TTR and examples)."""
    probe_new_tokens: int = 96
    """Tokens generated per context in a probe; the TTR is over these (paper's window: 96)."""
    probe_val: int = 64
    """Validation sequences used by each probe (loss, perplexity, entropy, top-1 mass)."""
    save_every: int = 1
    """Write a resumable checkpoint every this many epochs (0: only the final model)."""
    probe_every_updates: Optional[int] = None
    """Under train.updates: run the probes every this many updates (mid-epoch if need be), at update 0 and
    when training ends. None: 10 evenly spaced probes (every ceil(updates / 10)), or none when
    train.probe_every is 0; 0: no probes. `hyperfit experiment` cells default to 0 (no probes) unless the spec
    sets it. Needs
    train.updates (train.probe_every counts epochs otherwise)."""
    save_every_updates: Optional[int] = None
    """Under train.updates: write a resumable checkpoint (checkpoints/step-NNNNNNN/) every this many updates
    and when training ends. None or 0: the final weights only, no optimizer state (sweep-friendly: a
    resumable 1.1B checkpoint is ~13 GB), so such a run cannot be resumed. Needs train.updates."""
    keep_checkpoints: int = 1
    """How many epoch checkpoints to keep (oldest deleted first); final/ is always kept."""
    log_every: int = 10
    """Log the training loss every this many updates (each log is a device-to-host sync)."""
    tracker: Optional[str] = None
    """Also send metrics to an accelerate tracker: tensorboard, wandb, mlflow, comet_ml, aim, ..."""
    push_to_hub: Optional[str] = None
    """Upload the final model with its model card to this hub repository id when training ends."""
    compile: Optional[bool] = None
    """torch.compile the model and the loss for training (None: on with CUDA, off on CPU). Costs tens of
    seconds of compilation once; set false to debug or when the compiler fails on a model."""
    activation_checkpointing: bool = False
    """Recompute activations in backward instead of storing them: less memory, ~30 % more compute. Only
    when memory needs it (see `hyperfit plan`); under FSDP set fsdp_activation_checkpointing in its YAML."""
    optimizer: str = "adamw"
    """Memory mode: adamw (fp32 master weights, the paper's; 16 bytes/parameter), or one that trains bf16
    weights (model.dtype=bfloat16) without rounding lr-1e-6 updates away: adamw_kahan_sr (Kahan compensation
    + stochastic rounding, 10 B; recommended), adamw_kahan (Kahan, 10 B), optimi_kahan (torch-optimi, 10 B),
    torchao_sr (torchao, bf16 moments, 8 B), torchao_8bit_sr (torchao, 8-bit moments, 6 B). The last three
    need `pip install 'hyperfit[lowmem]'`. At lr 1e-6 the precision guard passes adamw_kahan_sr, refuses the
    round-to-nearest Kahan modes and torchao_sr, and measures torchao_8bit_sr per model (it sits at the bar);
    `hyperfit plan MODEL` prints each one's memory and verdict (docs/lowmem.md)."""
    chunked_loss: int = 0
    """Compute the cross-entropy over this many target tokens at a time (e.g. 1024), recomputing each chunk's
    logits in backward, so a large vocabulary's logits are never all materialised (8 × 256 tokens × 128k
    vocabulary: 2.5 GiB). 0: off. One process only (not under DDP/FSDP/DeepSpeed)."""
    method: str = "full"
    """full (every weight trains, the paper's recipe) or lora: low-rank adapters through peft on a frozen base;
    the adapters are kept in fp32 whatever model.dtype is, checkpoints hold the adapter, and final/ a merged
    model (with the adapter in final/adapter/)."""
    lora_rank: int = 16
    """LoRA rank r (train.method=lora)."""
    lora_alpha: float = 32.0
    """LoRA scaling alpha: the adapter's update is scaled by alpha / rank (train.method=lora)."""
    lora_dropout: float = 0.0
    """Dropout on the adapters' input (0: the paper trains without dropout)."""
    lora_targets: tuple[str, ...] = ()
    """Names of the linear modules that get adapters, e.g. [q_proj, v_proj]. Empty: every linear layer inside
    the model's transformer blocks (attention and MLP: q/k/v/o, gate/up/down for Llama; c_attn, c_proj, c_fc
    for GPT-2), found in the model itself."""
    lora_layers: str = "all"
    """Which transformer blocks get adapters: all, last:K (the last K blocks: late-stage LoRA, Li et al.
    arXiv 2605.22579 use the last 5), or block indices separated by commas, e.g. "0,1,5"."""
    # Pretraining schedule (hyperfit.images) ---------------------------------------------------------------
    schedule: str = "constant"
    """Learning-rate schedule: constant (the paper's hyperfitting), or cosine: linear warmup over
    train.warmup_updates, then cosine decay to 0 (for pretraining a base model with model.init=scratch)."""
    warmup_updates: int = 0
    """Updates of linear warmup before the cosine decay (train.schedule=cosine)."""
    order_swaps: int = 0
    """Swap this many pairs of batches in the first epoch's order (pairs drawn from train.seed): a minor
    reshuffle of the same data, for the shuffle recipe (paper Fig. 5 left). 0: the seeded order as is."""


@dataclass(frozen=True)
class GenerateConfig:
    decoder: str = "greedy"
    """Decoding preset: greedy (the paper's), top_p (the paper's baseline), top_k, temperature, typical, min_p,
    eta, epsilon, repetition_penalty, no_repeat_ngram, beam, contrastive, entropy_matched_temperature (see
    `hyperfit.decoding.presets`)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the decoder over its preset's defaults, e.g. generate.params={top_p: 0.95} or
    generate.params.top_p=0.95; an unknown one is an error listing the preset's parameters."""
    num_samples: int = 1
    """Continuations per context for sampling decoders (rows get sample = 0..n−1, each with its own seed);
    deterministic decoders give one row per context."""
    block_ngrams: Optional[int] = None
    """Citation blocker: forbid the decoder to reproduce any N-token span of the training samples (paper: 6;
    None: off)."""
    block_until_word_end: bool = False
    """With block_ngrams: the paper's variant that lets the model finish the word it is in. Only tokens that
    start a new word are banned, so a copy stops at the next word boundary instead of mid-word."""
    max_new_tokens: int = 256
    """Tokens generated per context (paper: 96, 128 and 256)."""
    stop_at_eos: bool = False
    """Stop a continuation at the end-of-sequence token. Off by default: the paper compares fixed-length
    continuations, and TTR over the last 96 tokens needs at least 96 of them."""
    checkpoint: str = "final"
    """Which weights continue the contexts: final, base (the untrained model.name), epoch-NNNN or step-NNNNNNN
    (the checkpoints of a train.updates run)."""
    batch_size: int = 32
    """Contexts per generate() call."""
    tag: Optional[str] = None
    """Name of the output file generations/<tag>.jsonl (default: <decoder>, or <checkpoint>-<decoder>
    when checkpoint is not final)."""
    seed: int = 0
    """Seed for sampling decoders."""
    fast: Optional[bool] = None
    """Greedy decoding with hyperfit.decoding.fast_greedy (static KV cache, decode step replayed as a CUDA graph):
    the same tokens as generate() in fp32, without its per-token Python overhead (benchmarks/generate.py
    measures it); in bf16 the two round differently and rows can part where two logits nearly tie. None: on
    with CUDA. Other decoders, or contexts of unequal length, use generate()."""
    dtype: str = "auto"
    """Weights dtype while generating: auto (bfloat16 on CUDA, as the speed numbers in docs/speed.md are; float32
    elsewhere), float32, bfloat16 or float16. Greedy tokens can differ between dtypes where two logits
    nearly tie, so each generation row records it; float32 reproduces the trained fp32 masters exactly."""
    with_base: bool = True
    """`hyperfit run` also continues the contexts with the untrained model (tag base-<decoder>), so the
    report compares the model before and after hyperfitting."""
    # Images (hyperfit.images) --------------------------------------------------------------------------
    prefix_fraction: float = 0.25
    """Images: the share of each held-out image's rows given as context (paper: the top 25 %); the model
    completes the rest. Decides data.context_len and generate.max_new_tokens for image data."""
    extra: tuple[dict[str, Any], ...] = ()
    """More generations `hyperfit run` makes and measures beside the configured ones: each a mapping of generate
    settings over this section's, e.g. [{checkpoint: base, decoder: top_p}, {block_ngrams: 6},
    {max_new_tokens: 128}] (the paper's Table 1 rows). Each lands in generations/<tag>.jsonl by the tag scheme
    of `hyperfit generate` and shares its cache; `hyperfit compare` reuses the files."""


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: tuple[str, ...] = (
        "ttr", "ttr_whole", "ttr_words", "distinct_1", "distinct_2", "distinct_4", "rep_2", "rep_4",
        "nonword_rate", "diversity", "self_bleu", "dataset_bleu", "longest_overlap", "overlap_gt10",
        "longest_overlap_words",
    )
    """Metrics computed on generations (see `hyperfit metrics` for the list)."""
    window: int = 96
    """Window for windowed metrics: TTR over the last `window` tokens (paper: 96)."""
    predictive: bool = True
    """Also compute teacher-forced metrics on the validation set: perplexity, entropy, top-1/3/5 mass."""
    batch_size: int = 16
    """Validation sequences per forward pass for the predictive metrics."""


@dataclass(frozen=True)
class RunConfig:
    name: str = "hyperfit"
    """Run name: the run directory is <out_dir>/<name>."""
    out_dir: str = "runs"
    """Parent directory of run directories."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name
