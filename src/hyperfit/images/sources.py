"""Image sources → uint8 RGB arrays [N, H, W, 3] with optional labels, checked before anything is written.

    data.source=photos/                  # PNG/JPEG files; label = subfolder name, or index.csv (path,label)
    data.source=digits.npy               # [N, H, W] or [N, H, W, 3], uint8 (or floats in [0, 1])
    data.source=t10k-images-idx3-ubyte.gz   # MNIST IDX (labels from the matching labels-idx1 file)
    data.source=cifar10 data.kind=images     # a Hugging Face image dataset (data.image_field, label)

Grey images become three equal channels (ImageGPT quantizes RGB). data.image_size resizes every image to a
square; without it all images must share one size.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hyperfit.config import DataConfig
from hyperfit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Images:
    pixels: np.ndarray
    """uint8 [N, H, W, 3]."""
    labels: list
    """One label per image (int, str or None)."""
    names: list[str]
    """Where each image came from (file, or source:index)."""


def looks_like_images(source: str) -> bool:
    """data.kind=auto: a folder, a .npy file or an MNIST IDX file is image data."""
    path = Path(source)
    return path.is_dir() or path.suffix.lower() == ".npy" or "idx3-ubyte" in path.name


def read_images(cfg: DataConfig) -> Images:
    path = Path(cfg.source)
    if path.is_dir():
        images = _read_folder(path, cfg)
    elif path.is_file() and path.suffix.lower() == ".npy":
        images = _read_npy(path)
    elif path.is_file() and "idx3-ubyte" in path.name:
        images = _read_idx(path)
    elif path.exists() or path.suffix:
        raise DataError(f"data.source={cfg.source!r} is not image data: give a folder of PNG/JPEG files, a .npy "
                        "array, an MNIST IDX file (…idx3-ubyte[.gz]) or a Hugging Face image dataset id")
    else:
        images = _read_hf(cfg)
    if cfg.max_documents is not None:
        images = Images(images.pixels[: cfg.max_documents], images.labels[: cfg.max_documents],
                        images.names[: cfg.max_documents])
    if cfg.image_size is not None and images.pixels.shape[1:3] != (cfg.image_size, cfg.image_size):
        images.pixels = np.stack([resize(a, cfg.image_size) for a in images.pixels])
    return images


def _read_folder(folder: Path, cfg: DataConfig) -> Images:
    index = folder / "index.csv"
    if index.is_file():
        with open(index, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        if not rows or "path" not in rows[0]:
            raise DataError(f"{index} needs a header with a path column (and optionally label); it has "
                            f"{list(rows[0]) if rows else 'no rows'}")
        files = [folder / r["path"] for r in rows]
        labels = [_label(r.get("label")) for r in rows]
    else:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        # A label from the subfolder name (class folders), as an index into the sorted class names.
        classes = sorted({p.parent.name for p in files if p.parent != folder})
        labels = [classes.index(p.parent.name) if p.parent != folder else None for p in files]
    if not files:
        raise DataError(f"data.source={str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)} files, searched "
                        "in subfolders too); give a folder of PNG or JPEG images")
    arrays = [_open(f) for f in files]
    return Images(_stack(arrays, [str(f) for f in files], cfg), labels, [str(f) for f in files])


def _label(value):
    if value is None or value == "":
        return None
    return int(value) if str(value).lstrip("-").isdigit() else value


def _open(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path} cannot be read as an image ({type(e).__name__}: {e}); replace or remove it") from None


def _stack(arrays: list[np.ndarray], names: list[str], cfg: DataConfig) -> np.ndarray:
    """Resize to data.image_size if set; otherwise all images must have one size."""
    if cfg.image_size is not None:
        return np.stack([resize(a, cfg.image_size) for a in arrays])
    sizes: dict[tuple, str] = {}
    for a, name in zip(arrays, names):
        sizes.setdefault(a.shape[:2], name)
    if len(sizes) > 1:
        listing = "; ".join(f"{h}×{w} (e.g. {name})" for (h, w), name in list(sizes.items())[:4])
        raise DataError(f"data.source={cfg.source!r} has images of {len(sizes)} sizes: {listing}. Set "
                        "data.image_size=N to resize them all to N×N")
    return np.stack(arrays)


def resize(a: np.ndarray, size: int) -> np.ndarray:
    if a.shape[:2] == (size, size):
        return a
    return np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC))


def _rgb(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or np.nanmin(x) < 0 or np.nanmax(x) > 255:
            raise DataError(f"{where}: pixel values must be uint8 (0–255) or floats in [0, 1]; got {x.dtype}")
        x = np.rint(x * 255 if np.nanmax(x) <= 1.0 else x).astype(np.uint8)
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.ndim != 4 or x.shape[-1] not in (3, 4):
        raise DataError(f"{where}: expected images [N, H, W] or [N, H, W, 3]; got shape {list(x.shape)}")
    return np.ascontiguousarray(x[..., :3])


def _read_npy(path: Path) -> Images:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} cannot be read as a .npy array ({e}); save it with numpy.save") from None
    x = _rgb(x, str(path))
    return Images(x, [None] * len(x), [f"{path}:{i}" for i in range(len(x))])


def _idx_bytes(path: Path) -> bytes:
    try:
        return gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} cannot be read ({e}); it is not an (optionally gzipped) IDX file") from None


def _read_idx(path: Path) -> Images:
    raw = _idx_bytes(path)
    magic, n, rows, cols = np.frombuffer(raw[:16], ">u4")
    if magic != 2051 or len(raw) != 16 + n * rows * cols:
        raise DataError(f"{path} is not an IDX image file (magic {magic}, expected 2051, and {n}×{rows}×{cols} "
                        "bytes after the 16-byte header)")
    x = _rgb(np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols), str(path))
    label_file = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    labels = [None] * int(n)
    if label_file != path and label_file.is_file():
        labels = np.frombuffer(_idx_bytes(label_file), np.uint8, offset=8).tolist()
    return Images(x, labels, [f"{path.name}:{i}" for i in range(int(n))])


def _read_hf(cfg: DataConfig) -> Images:
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"data.source={cfg.source!r} is not a local path, so it is read as a Hugging Face image "
                        "dataset id, which needs `pip install datasets`") from e
    ds = datasets.load_dataset(cfg.source, cfg.hf_config, split=cfg.split)
    if cfg.image_field not in ds.column_names:
        raise DataError(f"data.image_field={cfg.image_field!r} is not a column of {cfg.source}; its columns are "
                        f"{ds.column_names}")
    if cfg.max_documents is not None:
        ds = ds.select(range(min(cfg.max_documents, len(ds))))
    arrays = [np.asarray(im.convert("RGB")) for im in ds[cfg.image_field]]
    label_col = next((c for c in ("label", "labels", "fine_label") if c in ds.column_names), None)
    labels = list(ds[label_col]) if label_col else [None] * len(arrays)
    names = [f"{cfg.source}:{i}" for i in range(len(arrays))]
    return Images(_stack(arrays, names, cfg), labels, names)
