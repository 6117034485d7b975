"""Colour clusters as a vocabulary: pixels → cluster ids (ImageGPT's colour quantization) and back.

ImageGPT reads each pixel as the nearest of its colour clusters (512 for the hub models), in pixel values
scaled to [-1, 1], after a start-of-image token SOS = number of clusters. Quantization goes through
transformers' ImageGPTImageProcessor, so a hub model's images are tokenized exactly as it was trained. A
model built here (model.init=scratch) gets clusters fitted on its training images with scikit-learn's
KMeans, seeded. `PixelTokenizer` carries the clusters with the shape a tokenizer has where the pipeline
needs one (special-token ids, decode, save_pretrained), so checkpoints hold their palette beside the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hyperfit.errors import ModelError

PALETTE_FILE = "pixel_palette.json"


def has_palette(folder) -> bool:
    try:
        return (Path(str(folder)) / PALETTE_FILE).is_file()
    except OSError:
        return False


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixel values → [-1, 1], ImageGPT's scale for pixels and clusters."""
    return pixels.astype(np.float32) / 127.5 - 1.0


def fit_clusters(pixels: np.ndarray, k: int, seed: int, max_pixels: int = 200_000) -> np.ndarray:
    """k colour clusters [k, 3] in [-1, 1] fitted with KMeans on (a seeded sample of) the RGB pixels."""
    try:
        from sklearn.cluster import KMeans
    except ImportError as e:
        raise ModelError("a model built here (model.init=scratch) needs colour clusters fitted with scikit-learn's "
                         "KMeans: pip install 'hyperfit[images]' (or scikit-learn)") from e
    flat = to_unit(pixels.reshape(-1, 3))
    rng = np.random.default_rng(seed)
    if len(flat) > max_pixels:
        flat = flat[rng.choice(len(flat), max_pixels, replace=False)]
    distinct = np.unique(flat, axis=0)
    if len(distinct) <= k:  # fewer colours than clusters (e.g. a binarised set): each colour is its own cluster
        return np.concatenate([distinct, np.repeat(distinct[-1:], k - len(distinct), 0)]).astype(np.float32)
    km = KMeans(n_clusters=k, random_state=seed, n_init=1).fit(flat)
    centers = km.cluster_centers_.astype(np.float32)
    return centers[np.lexsort(centers.T[::-1])]  # sorted by colour: dark → light for grey images


def quantize(pixels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Cluster ids [N, H*W] of uint8 images [N, H, W, 3], by transformers' ImageGPTImageProcessor."""
    from transformers import ImageGPTImageProcessor

    processor = ImageGPTImageProcessor(clusters=clusters, do_resize=False)
    out = []
    for start in range(0, len(pixels), 512):
        batch = processor(list(pixels[start : start + 512]), return_tensors="np",
                          input_data_format="channels_last")["input_ids"]
        out.append(np.asarray(batch, dtype=np.int64))
    return np.concatenate(out) if out else np.zeros((0, 0), np.int64)


class PixelTokenizer:
    """The vocabulary of an image model: cluster ids 0..k-1 and SOS = k (bos). No EOS: images have a fixed
    length. Where text code decodes tokens, it gets the ids as text ("12 12 3 …")."""

    def __init__(self, clusters, height: int | None = None, width: int | None = None):
        self.clusters = np.asarray(clusters, dtype=np.float32)
        self.height, self.width = height, width
        self.bos_token_id = len(self.clusters)
        self.sos_token_id = self.bos_token_id
        self.eos_token_id = None
        self.pad_token_id = 0
        self.bos_token, self.eos_token, self.pad_token = str(self.bos_token_id), None, "0"

    def __len__(self) -> int:
        return len(self.clusters) + 1

    @property
    def vocab_size(self) -> int:
        return len(self)

    def get_vocab(self) -> dict[str, int]:
        return {str(i): i for i in range(len(self))}

    def convert_ids_to_tokens(self, ids):
        return str(ids) if isinstance(ids, int) else [str(i) for i in ids]

    def decode(self, ids, skip_special_tokens: bool = False, **_) -> str:
        return " ".join(str(int(i)) for i in ids if not (skip_special_tokens and int(i) == self.bos_token_id))

    def __call__(self, *_, **__):
        raise TypeError("a PixelTokenizer tokenizes images (hyperfit.images.quantize), not text")

    def encode_images(self, pixels: np.ndarray) -> list[list[int]]:
        """[SOS, cluster ids…] for each uint8 image [N, H, W, 3]."""
        return [[self.bos_token_id, *row] for row in quantize(pixels, self.clusters).tolist()]

    def pixels(self, ids, height: int | None = None, width: int | None = None) -> np.ndarray:
        """uint8 RGB [height, width, 3] of cluster ids (a leading SOS dropped; an SOS inside, which a Llama can
        generate, shows as the last colour); rows cut short are left black."""
        h, w = height or self.height, width or self.width
        ids = [int(i) for i in ids]
        ids = (ids[1:] if ids and ids[0] == self.bos_token_id else ids)[: h * w]
        rgb = np.zeros((h * w, 3), np.uint8)
        colours = np.clip(np.rint((self.clusters + 1.0) * 127.5), 0, 255).astype(np.uint8)
        rgb[: len(ids)] = colours[np.clip(ids, 0, len(colours) - 1)]
        return rgb.reshape(h, w, 3)

    def save_pretrained(self, folder) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"clusters": self.clusters.tolist(), "height": self.height, "width": self.width}
        (folder / PALETTE_FILE).write_text(json.dumps(payload))

    @classmethod
    def from_folder(cls, folder) -> PixelTokenizer:
        payload = json.loads((Path(folder) / PALETTE_FILE).read_text())
        return cls(payload["clusters"], payload.get("height"), payload.get("width"))


def pixel_tokenizer(name: str, revision: str | None = None) -> PixelTokenizer:
    """The PixelTokenizer of a model folder (its palette file) or of a hub ImageGPT (its image processor's
    clusters)."""
    if has_palette(name):
        return PixelTokenizer.from_folder(name)
    from transformers import ImageGPTImageProcessor

    try:
        processor = ImageGPTImageProcessor.from_pretrained(name, revision=revision)
    except OSError as e:
        raise ModelError(f"cannot load the ImageGPT image processor (colour clusters) of model.name={name!r}: "
                         f"{str(e).rstrip('.')}. Check the hub id (and network / HF_HUB_OFFLINE)") from e
    size = processor.size or {}
    return PixelTokenizer(np.asarray(processor.clusters), size.get("height"), size.get("width"))
