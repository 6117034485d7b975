"""Hyperfitting autoregressive image models: pixels → colour-cluster tokens → completions → grids.

    hyperfit run configs/paper/imagegpt.yaml          # ImageGPT from the hub on 2,000 CIFAR-10 images
    hyperfit demo --images                            # a tiny ImageGPT pretrained here on MNIST, then hyperfitted

The face of the package: image sources (`read_images`), the palette (`PixelTokenizer`, fitted clusters),
the data stage (`prepare_image_data`), the image metrics and the report's grids.
"""

from hyperfit.images.data import image_run, prefix_rows, prepare_image_data, with_image_lengths
from hyperfit.images.evaluate import evaluate_images, image_report_lines, write_grids
from hyperfit.images.metrics import completion_metrics, image_metrics, longest_run
from hyperfit.images.palette import (
    PALETTE_FILE,
    PixelTokenizer,
    fit_clusters,
    has_palette,
    pixel_tokenizer,
    quantize,
)
from hyperfit.images.sources import Images, looks_like_images, read_images

__all__ = [
    "PALETTE_FILE", "Images", "PixelTokenizer", "completion_metrics", "evaluate_images",
    "fit_clusters", "has_palette", "image_metrics", "image_report_lines", "image_run", "longest_run",
    "looks_like_images", "pixel_tokenizer", "prefix_rows", "prepare_image_data", "quantize", "read_images",
    "with_image_lengths", "write_grids",
]
