"""Image data stage: images → [SOS, cluster id per pixel] samples, split and recorded like text samples.

The split is the text one (`hyperfit.stages.data.split_documents`): one seeded order over distinct images
(equal pixels count once), contexts first, then validation, then training, so the held-out images do not
depend on data.num_train. A context is an image's SOS and its first rows (generate.prefix_fraction of
them); the rest of the image is the reference ("human") continuation. data/ gets train/val/contexts.jsonl
(input_ids, context_ids, reference_ids, label), manifest.json, and pixel_palette.json, the colour clusters
used.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from hyperfit.config import DataConfig, RunConfig
from hyperfit.errors import ConfigError, DataError
from hyperfit.images.palette import PixelTokenizer, fit_clusters, has_palette
from hyperfit.images.sources import Images, read_images
from hyperfit.runs import RunDir, write_json, write_jsonl
from hyperfit.stages.data import split_documents


def prefix_rows(height: int, fraction: float) -> int:
    """Rows given as context: round(fraction × height), at least 1 and at most height − 1.

    >>> prefix_rows(32, 0.25), prefix_rows(28, 0.25), prefix_rows(4, 0.01)
    (8, 7, 1)
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"generate.prefix_fraction={fraction} must be in (0, 1): the share of each image's rows "
                          "given as context, e.g. 0.25 (the paper's top quarter)")
    return min(height - 1, max(1, round(fraction * height)))


def image_shape(cfg: DataConfig) -> tuple[int, int]:
    """(height, width) of the images data.source gives (after data.image_size), reading them."""
    return tuple(read_images(cfg).pixels.shape[1:3])


def with_image_lengths(cfg: RunConfig, height: int, width: int, positions: int | None = None) -> RunConfig:
    """The run config with sequence lengths set by the image size: seq_len = 1 + H·W (SOS first; at most the
    model's `positions`, one fewer for a hub ImageGPT), context_len = 1 + prefix rows · W,
    generate.max_new_tokens = the remaining pixels."""
    rows = prefix_rows(height, cfg.generate.prefix_fraction)
    tokens = 1 + height * width
    if positions is not None and tokens > positions + 1:
        raise ConfigError(f"images of {height}×{width} are {tokens} tokens (SOS + pixels), but model.name="
                          f"{cfg.model.name!r} has {positions} positions; set data.image_size so that "
                          f"size² ≤ {positions} (ImageGPT: 32)")
    seq_len = min(tokens, positions) if positions else tokens
    data = dataclasses.replace(cfg.data, seq_len=seq_len, context_len=1 + rows * width)
    gen = dataclasses.replace(cfg.generate, max_new_tokens=(height - rows) * width)
    return dataclasses.replace(cfg, data=data, generate=gen)


def image_hash(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:16]


def palette_for(images: Images, train_idx: list[int], tokenizer: PixelTokenizer | None, clusters: int,
                seed: int) -> PixelTokenizer:
    """The model's palette, or (a model built here) one fitted on the training images only."""
    h, w = images.pixels.shape[1:3]
    if tokenizer is not None:
        return PixelTokenizer(tokenizer.clusters, h, w)
    return PixelTokenizer(fit_clusters(images.pixels[train_idx], clusters, seed), h, w)


def prepare_image_data(cfg: DataConfig, prefix_fraction: float, run: RunDir, tokenizer: PixelTokenizer | None = None,
                       clusters: int = 16, max_len: int | None = None) -> dict:
    """Read, split, quantize and write data/{train,val,contexts}.jsonl, pixel_palette.json and manifest.json.

    `tokenizer`: the model's PixelTokenizer (a hub or trained image model); None fits `clusters` colours with
    KMeans on the training images (model.init=scratch). `max_len`: the model's positions, when one fewer than
    SOS + pixels (a hub ImageGPT: 1024 positions for 32×32 images): training and validation samples then drop
    the last pixel, which no forward pass of that model can take as input. Everything is computed before the
    first file is written.
    """
    run = RunDir.of(run)
    images = read_images(cfg)
    n, h, w = images.pixels.shape[:3]
    rows = prefix_rows(h, prefix_fraction)
    cfg = dataclasses.replace(cfg, seq_len=1 + h * w, context_len=1 + rows * w)
    hashes = [image_hash(x) for x in images.pixels]
    split = split_documents([cfg.seq_len] * n, cfg, keys=hashes)
    palette = palette_for(images, split["train"], tokenizer, clusters, cfg.seed)
    chosen = sorted(set().union(*split.values()))
    ids = dict(zip(chosen, palette.encode_images(images.pixels[chosen])))

    def common(i: int) -> dict:
        return {"doc_id": i, "label": images.labels[i], "image": images.names[i], "text_hash": hashes[i]}

    def sample(kind: str, k: int, i: int) -> dict:
        return {"id": f"{kind}-{k:05d}", "input_ids": ids[i][:max_len], **common(i)}

    def context(k: int, i: int) -> dict:
        ctx, ref = ids[i][: cfg.context_len], ids[i][cfg.context_len :]
        return {"id": f"ctx-{k:05d}", "context_ids": ctx, "context": f"image {images.names[i]}, top {rows} rows",
                "reference_ids": ref, "reference": palette.decode(ref), **common(i)}

    train = [sample("train", k, i) for k, i in enumerate(split["train"])]
    val = [sample("val", k, i) for k, i in enumerate(split["val"])]
    contexts = [context(k, i) for k, i in enumerate(split["contexts"])]
    manifest = {"kind": "images", "source": cfg.source, "documents": n, "qualifying": len(set(hashes)),
                "train": len(train), "val": len(val), "contexts": len(contexts),
                "seq_len": len(train[0]["input_ids"]) if train else cfg.seq_len,
                "context_len": cfg.context_len, "height": h, "width": w, "prefix_rows": rows,
                "clusters": len(palette.clusters), "palette": "fitted (KMeans on the training images)"
                if tokenizer is None else "the model's", "seed": cfg.seed}
    if not train:
        raise DataError(f"data.source={cfg.source!r}: no training images after the split")
    write_jsonl(run.data_file("train"), train)
    write_jsonl(run.data_file("val"), val)
    write_jsonl(run.data_file("contexts"), contexts)
    palette.save_pretrained(run.data)
    write_json(run.data / "manifest.json", manifest)
    return manifest


def image_run(run: RunDir) -> bool:
    """Whether the run's data are images (its data/ holds a palette)."""
    return has_palette(RunDir.of(run).data)
