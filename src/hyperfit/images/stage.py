"""How `hyperfit run` treats image data: the run config the images imply, the model/data kind check, the data
stage (and, for model.init=scratch, the base model built into the run), and the extra sampled generations."""

from __future__ import annotations

import dataclasses

from hyperfit.config import RunConfig
from hyperfit.config.schema import EvaluateConfig
from hyperfit.errors import ModelError
from hyperfit.images.data import prefix_rows, prepare_image_data, with_image_lengths
from hyperfit.images.palette import PixelTokenizer
from hyperfit.images.sources import looks_like_images, read_images
from hyperfit.runs import RunDir

BASE_MODEL = "base-model"  # model.init=scratch: the randomly initialised model, saved in the run
# Metrics of evaluate.metrics that mean something on pixel tokens (the text ones need words).
IMAGE_TOKEN_METRICS = ("ttr", "distinct_1", "distinct_4", "rep_4", "longest_overlap")
SAMPLED = ("temperature", {"temperature": 1.0})  # ImageGPT's own sampling: the full distribution


def is_image_data(cfg: RunConfig) -> bool:
    if cfg.data.kind != "auto":
        return cfg.data.kind == "images"
    return bool(cfg.data.source) and looks_like_images(cfg.data.source)


def image_config(cfg: RunConfig, run_dir: RunDir) -> RunConfig:
    """The config an image run runs under: lengths from the image size (seq_len, context_len, max_new_tokens),
    a scratch model's folder inside the run, the token metrics that apply to pixels when evaluate.metrics is
    the text default, and probes no longer than a completion."""
    prefix_rows(2, cfg.generate.prefix_fraction)  # a fraction outside (0, 1): refused before reading anything
    h, w = read_images(dataclasses.replace(cfg.data, max_documents=1)).pixels.shape[1:3]
    cfg = with_image_lengths(cfg, h, w, None if cfg.model.init == "scratch" else _positions(cfg))
    if cfg.model.init == "scratch":
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=str(run_dir.path / BASE_MODEL)))
    if cfg.evaluate.metrics == EvaluateConfig().metrics:
        cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, metrics=IMAGE_TOKEN_METRICS))
    probe = min(cfg.train.probe_new_tokens, cfg.generate.max_new_tokens)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, probe_new_tokens=probe))


def _positions(cfg: RunConfig) -> int | None:
    from hyperfit.models import context_length, load_model_config

    return context_length(load_model_config(cfg.model))


def check_kinds(cfg: RunConfig, images: bool) -> None:
    """A text model with image data, or an image model with text data, fails here, before anything is written."""
    from hyperfit.models import is_image_model, load_model_config

    if cfg.model.init == "scratch":
        if not images:
            raise ModelError("model.init=scratch builds an image model (ImageGPT or Llama over colour clusters), but "
                             f"data.source={cfg.data.source!r} is text; give image data (data.kind=images)")
        return
    image_model = is_image_model(cfg.model, load_model_config(cfg.model))
    if images and not image_model:
        raise ModelError(f"model.name={cfg.model.name!r} is a text model, but data.source={cfg.data.source!r} is "
                         "images; use an image model (an ImageGPT id such as openai/imagegpt-small, a model "
                         "hyperfitted here on images, or model.init=scratch), or text data")
    if image_model and not images:
        raise ModelError(f"model.name={cfg.model.name!r} is an image model (colour-cluster tokens), but "
                         f"data.source={cfg.data.source!r} is text; give image data (a folder of images, a .npy, "
                         "an MNIST IDX file, or data.kind=images for a datasets id), or a text model")


def write_image_data(cfg: RunConfig, run_dir: RunDir) -> dict:
    """data/ from the images, in the model's palette, or (model.init=scratch) one fitted on the training images."""
    from hyperfit.models import load_tokenizer

    tokenizer = None if cfg.model.init == "scratch" else load_tokenizer(cfg.model)
    clusters = int(cfg.model.config.get("clusters", 16))
    return prepare_image_data(cfg.data, cfg.generate.prefix_fraction, run_dir, tokenizer, clusters,
                              max_len=cfg.data.seq_len)


def ensure_base_model(cfg: RunConfig, run_dir: RunDir) -> None:
    """model.init=scratch: the randomly initialised base model (seeded by train.seed) with the run's palette,
    saved into the run once, so base generations and training start from the same weights."""
    from hyperfit.models import build_scratch_model

    folder = run_dir.path / BASE_MODEL
    if cfg.model.init != "scratch" or (folder / "config.json").is_file():
        return
    palette = PixelTokenizer.from_folder(run_dir.data)
    seq_len = 1 + palette.height * palette.width
    model = build_scratch_model(cfg.model, len(palette), seq_len, cfg.train.seed)
    model.save_pretrained(folder)
    palette.save_pretrained(folder)


def sampled_changes() -> dict:
    """The Job changes of the image runs' sampled completions (beside the run's own decoder)."""
    return {"decoder": SAMPLED[0], "params": dict(SAMPLED[1])}
