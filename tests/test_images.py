"""hyperfit.images: image sources, colour clusters, the image data stage, completions through the shared
decoders, image metrics and grids, and `hyperfit run` on image data (tiny models built in-process, real MNIST
and CIFAR-10 images from ../shared/assets/images)."""

import gzip
import json

import numpy as np
import pytest
import torch

from hyperfit.config import DataConfig, ModelConfig, load_config
from hyperfit.errors import ConfigError, DataError, HyperfitError, ModelError
from hyperfit.images import (
    PixelTokenizer,
    completion_metrics,
    fit_clusters,
    image_metrics,
    prefix_rows,
    prepare_image_data,
    quantize,
    read_images,
)
from hyperfit.images.metrics import nearest_rmse
from hyperfit.runs import RunDir, read_jsonl
from tinymodels import ASSETS

IMAGES = ASSETS / "images"
MNIST = IMAGES / "mnist" / "t10k-images-idx3-ubyte.gz"
CIFAR_JPEG = IMAGES / "cifar10" / "test_jpeg"
needs_images = pytest.mark.skipif(not MNIST.is_file() or not CIFAR_JPEG.is_dir(),
                                  reason=f"real image assets not found at {IMAGES} (CI has ../shared/assets)")


def tiny_model(model_type="imagegpt", vocab=9, positions=65, seed=0):
    from hyperfit.models import build_scratch_model

    sizes = ({"n_embd": 16, "n_layer": 1, "n_head": 2} if model_type == "imagegpt" else
             {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 2})
    cfg = ModelConfig(init="scratch", config={"model_type": model_type, **sizes})
    return build_scratch_model(cfg, vocab, positions, seed).eval()


def write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# Sources ------------------------------------------------------------------------------------------------


@needs_images
def test_mnist_idx_reads_the_real_digits_with_labels():
    images = read_images(DataConfig(source=str(MNIST), max_documents=50))
    with gzip.open(MNIST) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(10000, 28, 28)
    assert images.pixels.shape == (50, 28, 28, 3)
    assert (images.pixels[..., 0] == raw[:50]).all() and (images.pixels[..., 2] == raw[:50]).all()
    assert images.labels[:10] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first MNIST test labels


@needs_images
def test_cifar_folder_uses_its_index_csv_labels_and_resizes():
    images = read_images(DataConfig(source=str(CIFAR_JPEG), max_documents=5, image_size=16))
    assert images.pixels.shape == (5, 16, 16, 3) and images.labels[0] == 0
    assert images.names[0].endswith("airplane/0000.jpg")


def test_folder_labels_from_subfolders_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(2):
            write_png(tmp_path / "pics" / cls / f"{i}.png", rng.integers(0, 255, (6, 6, 3), dtype=np.uint8))
    images = read_images(DataConfig(source=str(tmp_path / "pics")))
    assert images.labels == [0, 0, 1, 1] and images.pixels.shape == (4, 6, 6, 3)
    grey = rng.random((3, 5, 5))  # floats in [0, 1], grey
    np.save(tmp_path / "x.npy", grey)
    from_npy = read_images(DataConfig(source=str(tmp_path / "x.npy")))
    assert from_npy.pixels.shape == (3, 5, 5, 3) and from_npy.pixels[0, 0, 0, 0] == round(grey[0, 0, 0] * 255)


def test_bad_image_sources_fail_with_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        read_images(DataConfig(source=str(tmp_path / "empty")))
    write_png(tmp_path / "mixed" / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_png(tmp_path / "mixed" / "b.png", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(DataError, match="2 sizes.*data.image_size"):
        read_images(DataConfig(source=str(tmp_path / "mixed")))
    assert read_images(DataConfig(source=str(tmp_path / "mixed"), image_size=5)).pixels.shape == (2, 5, 5, 3)
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png cannot be read"):
        read_images(DataConfig(source=str(tmp_path / "mixed"), image_size=5))


# Palette -----------------------------------------------------------------------------------------------


def test_quantize_is_the_nearest_cluster_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (3, 4, 4, 3), dtype=np.uint8)
    clusters = fit_clusters(pixels, 8, seed=0)
    assert np.array_equal(clusters, fit_clusters(pixels, 8, seed=0))  # seeded
    ids = quantize(pixels, clusters)
    unit = pixels.reshape(3, -1, 3).astype(np.float32) / 127.5 - 1
    nearest = ((unit[:, :, None] - clusters[None, None]) ** 2).sum(-1).argmin(-1)
    assert np.array_equal(ids, nearest)
    tok = PixelTokenizer(clusters, 4, 4)
    tok.save_pretrained(tmp_path)
    again = PixelTokenizer.from_folder(tmp_path)
    assert again.bos_token_id == 8 and len(again) == 9 and (again.height, again.width) == (4, 4)
    rgb = again.pixels([8, *ids[0]])
    expected = np.clip(np.rint((clusters[ids[0]] + 1) * 127.5), 0, 255).reshape(4, 4, 3)
    assert np.array_equal(rgb, expected)


# Data stage --------------------------------------------------------------------------------------------


@needs_images
def test_image_data_stage_on_mnist(tmp_path):
    cfg = DataConfig(source=str(MNIST), max_documents=300, image_size=8, num_train=40, num_val=10, num_contexts=10)
    run = RunDir(tmp_path / "run")
    manifest = prepare_image_data(cfg, 0.25, run, clusters=8)
    train, val, ctx = (read_jsonl(run.data_file(k)) for k in ("train", "val", "contexts"))
    assert manifest["seq_len"] == 65 and manifest["prefix_rows"] == 2 and manifest["context_len"] == 17
    assert all(r["input_ids"][0] == 8 and len(r["input_ids"]) == 65 for r in train + val)
    assert all(len(c["context_ids"]) == 17 and len(c["reference_ids"]) == 48 for c in ctx)
    docs = [{r["doc_id"] for r in rows} for rows in (train, val, ctx)]
    assert not (docs[0] & docs[1] or docs[0] & docs[2] or docs[1] & docs[2])
    # the held-out images do not depend on num_train, and the palette was fitted on training images only
    bigger = prepare_image_data(DataConfig(**{**cfg.__dict__, "num_train": 80}), 0.25, RunDir(tmp_path / "b"),
                                clusters=8)
    assert bigger["contexts"] == 10
    assert [c["doc_id"] for c in read_jsonl(RunDir(tmp_path / "b").data_file("contexts"))] == [c["doc_id"] for c in ctx]
    assert (run.data / "pixel_palette.json").is_file() and train[0]["label"] in range(10)


def test_prefix_fraction_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match="prefix_fraction"):
        prefix_rows(32, 1.0)
    with pytest.raises(HyperfitError, match="generate.prefix_fraction"):
        load_config(None, ["data.source=x.npy", "generate.prefix_fraction=0"])


# Generation on pixel tokens ---------------------------------------------------------------------------


def argmax_loop(model, contexts, n):
    ids = torch.tensor(contexts)
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[:, len(contexts[0]):].tolist()


@pytest.mark.parametrize("model_type", ["imagegpt", "llama"])
def test_greedy_on_image_tokens_equals_a_hand_written_argmax_loop(model_type):
    from hyperfit.decoding.loops import continue_contexts
    from hyperfit.decoding.presets import generation_config

    model = tiny_model(model_type)
    tok = PixelTokenizer(np.zeros((8, 3)), 8, 8)
    rng = np.random.default_rng(0)
    contexts = [[8, *rng.integers(0, 8, 16).tolist()] for _ in range(3)]
    gen = generation_config("greedy", tok, 48)
    expected = argmax_loop(model, contexts, 48)
    assert continue_contexts(model, contexts, gen, batch_size=2, fast=False) == expected
    # the fast greedy loop too (ImageGPT, whose attention cannot use its static cache, falls back to generate())
    assert continue_contexts(model, contexts, gen, batch_size=2, fast=True) == expected


def test_citation_blocker_works_on_pixel_tokens():
    from transformers import LogitsProcessorList

    from hyperfit.decoding.blocker import NgramBlocker
    from hyperfit.decoding.loops import continue_contexts
    from hyperfit.decoding.presets import generation_config

    model = tiny_model()
    tok = PixelTokenizer(np.zeros((8, 3)), 8, 8)
    contexts = [[8, *([1, 2] * 8)]]
    gen = generation_config("greedy", tok, 48)
    free = continue_contexts(model, contexts, gen, fast=False)[0]
    train = [free]  # forbid exactly what the model would write
    blocker = LogitsProcessorList([NgramBlocker.from_samples(train, 4)])
    blocked = continue_contexts(model, contexts, gen, logits_processor=blocker, fast=False)[0]
    grams = {tuple(train[0][i : i + 4]) for i in range(len(train[0]) - 3)}
    out = contexts[0] + blocked
    assert blocked != free
    assert not any(tuple(out[i : i + 4]) in grams for i in range(len(contexts[0]) - 3, len(out) - 3))


# Metrics -----------------------------------------------------------------------------------------------


def test_completion_metrics_measure_collapse():
    grid = np.array([[1, 2, 3, 4], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    m = completion_metrics(grid, prefix_rows=1)
    assert m["uniform_rows"] == 1.0 and m["row_repeat"] == 2 / 3 and m["longest_run"] == 1.0
    assert m["ttr"] == 1 / 12 and m["colour_entropy"] == 0.0
    varied = completion_metrics(np.arange(16).reshape(4, 4) % 5, prefix_rows=1)
    assert varied["uniform_rows"] == 0.0 and varied["colour_entropy"] > 2


def test_nearest_training_image_distance_is_zero_for_a_copy():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, (5, 4, 4, 3), dtype=np.uint8)
    d = nearest_rmse(np.stack([train[3], 255 - train[3]]), train)
    assert d[0] == pytest.approx(0, abs=1e-3) and d[1] > 0.1
    tok = PixelTokenizer(np.linspace(-1, 1, 8)[:, None].repeat(3, 1), 4, 4)
    train_ids = [[8, *rng.integers(0, 8, 16).tolist()] for _ in range(3)]
    ctx = [{"context_ids": train_ids[1][:5]}]
    copied = image_metrics(ctx, [train_ids[1][5:]], train_ids, tok, 4, 4, 1)
    assert copied["nearest_train_rmse"] == pytest.approx(0, abs=1e-3)


# hyperfit run on images -------------------------------------------------------------------------------


def image_run_overrides(tmp_path, **extra):
    settings = {"name": "img", "out_dir": str(tmp_path), "data.source": str(MNIST), "data.image_size": 8,
                "data.num_train": 16, "data.num_val": 8, "data.num_contexts": 8, "data.max_documents": 200,
                "model.init": "scratch",
                "model.config": "{model_type: imagegpt, n_embd: 16, n_layer: 1, n_head: 2, clusters: 8}",
                "train.epochs": 2, "train.lr": 3e-3, "train.batch_size": 8, "train.schedule": "cosine",
                "train.warmup_updates": 1, "train.probe_every": 1, "train.save_every": 0,
                "train.probe_contexts": 4, "train.probe_val": 8, "generate.batch_size": 8, **extra}
    return [f"{k}={v}" for k, v in settings.items()]


@needs_images
def test_hyperfit_run_on_images_writes_the_run_contract_and_grids(tmp_path):
    from PIL import Image

    from hyperfit.stages.pipeline import run

    run_dir = run(load_config(None, image_run_overrides(tmp_path)))
    for tag in ("greedy", "base-greedy", "temperature", "base-temperature"):
        rows = read_jsonl(run_dir.generation_file(tag))
        assert len(rows) == 8 and all(len(r["continuation_ids"]) == 48 for r in rows)
        assert all(0 <= t < 8 for r in rows for t in r["continuation_ids"])  # colours, never SOS (ImageGPT)
        assert run_dir.metrics_file(tag).is_file()
    table = json.loads((run_dir.metrics / "images.json").read_text())
    assert set(table) == {"reference", "greedy", "base-greedy", "temperature", "base-temperature"}
    assert table["greedy"]["bits_per_dim"] > 0 and 0 <= table["greedy"]["row_repeat"] <= 1
    report = run_dir.report.read_text()
    assert "## Images" in report and "plots/images-greedy.png" in report
    grid = np.asarray(Image.open(run_dir.path / "plots" / "images-greedy.png"))
    assert grid.shape == (8 * (128 + 2) + 2, 4 * (128 + 2) + 2, 3)  # 8 images × (context, base, hyperfitted, true)
    assert (run_dir.final / "pixel_palette.json").is_file() and (run_dir.path / "base-model" / "config.json").is_file()
    # the citation blocker on pixel tokens, through the generate stage
    from hyperfit.stages.generate import generate

    cfg = load_config(None, image_run_overrides(tmp_path))
    blocked = read_jsonl(generate(cfg.generate.__class__(**{**cfg.generate.__dict__, "max_new_tokens": 48,
                                                            "block_ngrams": 6, "batch_size": 8}),
                                  ModelConfig(name=str(run_dir.path / "base-model")), run_dir))
    train = [r["input_ids"][1:] for r in run_dir.read_samples("train")]
    grams = {tuple(t[i : i + 6]) for t in train for i in range(len(t) - 5)}
    for row, ctx in zip(blocked, run_dir.read_samples("contexts")):
        out = ctx["context_ids"] + row["continuation_ids"]
        assert not any(tuple(out[i : i + 6]) in grams for i in range(len(ctx["context_ids"]) - 5, len(out) - 5))


@needs_images
def test_a_text_model_with_image_data_and_the_reverse_fail_before_writing(tmp_path, tiny_llama, corpus_file):
    from hyperfit.stages.pipeline import run

    overrides = image_run_overrides(tmp_path, **{"model.init": "pretrained", "model.name": str(tiny_llama)})
    with pytest.raises(ModelError, match="is a text model.*is images"):
        run(load_config(None, overrides))
    assert not (tmp_path / "img").exists()
    image_model = tmp_path / "imgmodel"
    tiny_model().save_pretrained(image_model)
    PixelTokenizer(np.zeros((8, 3)), 8, 8).save_pretrained(image_model)
    with pytest.raises(ModelError, match="is an image model.*is text"):
        run(load_config(None, [f"out_dir={tmp_path}", "name=txt", f"model.name={image_model}",
                               f"data.source={corpus_file}"]))
    with pytest.raises(ModelError, match="scratch builds an image model"):
        run(load_config(None, [f"out_dir={tmp_path}", "name=txt", "model.init=scratch", f"data.source={corpus_file}"]))
    assert not (tmp_path / "txt").exists()


@needs_images
def test_a_trained_image_model_with_one_position_short_of_the_image_runs(tmp_path):
    """A hub ImageGPT has 1024 positions for SOS + 1024 pixels: training drops the last pixel, completions
    generate every remaining pixel. Here a saved tiny ImageGPT with 64 positions on 8×8 digits."""
    from hyperfit.stages.pipeline import run

    model_dir = tmp_path / "model"
    tiny_model(positions=64).save_pretrained(model_dir)
    clusters = np.linspace(-1, 1, 8)[:, None].repeat(3, 1).astype(np.float32)
    PixelTokenizer(clusters, 8, 8).save_pretrained(model_dir)
    overrides = image_run_overrides(tmp_path, **{"model.init": "pretrained", "model.name": str(model_dir),
                                                 "train.epochs": 1, "train.probe_every": 0,
                                                 "generate.with_base": "false"})
    run_dir = run(load_config(None, overrides))
    assert len(run_dir.read_samples("train")[0]["input_ids"]) == 64
    assert np.allclose(PixelTokenizer.from_folder(run_dir.data).clusters, clusters)  # the model's palette
    rows = read_jsonl(run_dir.generation_file("greedy"))
    assert all(len(r["continuation_ids"]) == 48 for r in rows)


def test_plan_knows_imagegpt_sizes():
    from hyperfit.plan import model_config, shape_of

    small, large = (shape_of(model_config(f"imagegpt-{s}")) for s in ("small", "large"))
    assert 70e6 < small.params < 80e6 and small.layers == 24  # openai/imagegpt-small: 76 M parameters
    assert 1.3e9 < large.params < 1.4e9 and large.hidden == 1536  # imagegpt-large: 1.36 B


@needs_images
@pytest.mark.slow
def test_demo_images_pretrains_hyperfits_and_reuses_its_base(tmp_path, capsys):
    from hyperfit.images.demo import demo_images

    small = ["data.image_size=8", "data.num_val=8", "data.num_contexts=8", "train.probe_every=0"]
    overrides = [*small, *(f"pretrain.{o}" for o in small), "pretrain.data.num_train=64", "pretrain.train.updates=4",
                 "data.num_train=16", "train.epochs=2"]
    run_dir = demo_images(str(ASSETS), str(tmp_path), overrides)
    out = capsys.readouterr().out
    assert "base-greedy" in out and "true images" in out and (run_dir.path / "plots" / "images-greedy.png").is_file()
    base = tmp_path / "demo-images-base"
    assert (base / "checkpoints" / "final" / "pixel_palette.json").is_file()
    # the hyperfitted run starts from the pretrained weights, and its held-out digits are the base run's
    held_out = [c["doc_id"] for c in read_jsonl(base / "data" / "contexts.jsonl")]
    assert [c["doc_id"] for c in run_dir.read_samples("contexts")] == held_out
    demo_images(str(ASSETS), str(tmp_path), overrides)
    assert "reusing the pretrained base model" in capsys.readouterr().out
