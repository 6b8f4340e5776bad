"""Decoded images: `LabeledImages` (a whole dataset as one uint8 tensor), and how one file becomes (3, S, S) uint8.

Every source decodes each image once, resized to the training size, so epochs after the first do no decoding at
all (a CPU spends most of a small model's time there otherwise).
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.data.multilabel import joined
from core.errors import DataError

MEMORY_BUDGET = 6 << 30  # decoded uint8 images kept in memory; past this, ask for a smaller image size
# Past this, an image is not decoded at all, whatever reads it (health check, training, Predict, Layers): the
# header says how many pixels follow, and a 437 KB PNG can declare 150 megapixels (450 MB as RGB, before any
# resize). A 40-megapixel photo is already huge.
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class LabeledImages:
    images: torch.Tensor  # (N, 3, S, S) uint8, RGB
    labels: torch.Tensor  # (N,) int64 class indices; multi-label: (N, C) bool, a row per image's label set
    class_names: tuple[str, ...]
    item_names: tuple[str, ...]  # where each image came from, for people (file name or "digits #12")
    valid_mask: torch.Tensor | None = None  # (N,) bool when the data brings its own validation split

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def multi_label(self) -> bool:
        return self.labels.dim() == 2

    def label_texts(self) -> list[str]:
        """Each image's class, or its label set joined as core.data.multilabel.joined does ("" for an empty set)."""
        if self.multi_label:
            return [joined(tuple(self.class_names[j] for j in row.nonzero()[0])) for row in self.labels.numpy()]
        return [self.class_names[label] for label in self.labels.tolist()]

    def label_of(self, i: int) -> str:
        """Image i's class, or its label set joined ("no label" for an empty set), for people."""
        if self.multi_label:
            return joined(tuple(self.class_names[j] for j in self.labels[i].nonzero().flatten().tolist())) or \
                "no label"
        return self.class_names[int(self.labels[i])]

    def class_counts(self) -> dict[str, int]:
        """Each class's images (multi-label: each label's)."""
        n = len(self.class_names)
        counts = self.labels.sum(0) if self.multi_label else torch.bincount(self.labels, minlength=n)
        return dict(zip(self.class_names, counts.tolist()))

    def fingerprint(self) -> str:
        """A short hash of pixels and labels: two runs with the same fingerprint saw the same data."""
        from core.data.mapped import hash_rows

        digest = hashlib.sha256()
        hash_rows(self.images, digest)  # a chunk at a time: the images may be a memory-mapped file
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) uint8 to (N, C, size, size) uint8 with antialiasing, in chunks to bound memory."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    chunks = []
    for start in range(0, len(images), 512):
        chunk = images[start:start + 512].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        chunks.append(chunk.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks)


def fit_square(image, size: int, resize: str):
    """Make a PIL image square at `size`: squish (stretch), crop (centre square) or pad (black borders)."""
    from PIL import Image, ImageOps

    if resize == "crop":
        return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    if resize == "pad":
        return ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=(0, 0, 0))
    return image.resize((size, size), Image.Resampling.BILINEAR)


def check_pixels(image) -> None:
    """DataError when an opened (not yet decoded) PIL image declares more than MAX_PIXELS pixels."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DataError(f"That image is {width:,}×{height:,} pixels, more than the {MAX_PIXELS // 1_000_000} "
                        "megapixels this app opens; use a smaller copy.")


def open_rgb(path, size: int, resize: str = "squish") -> torch.Tensor:
    """Decode one image file into (3, size, size) uint8: EXIF orientation applied, every mode made RGB the same
    way (transparency onto white, 16-bit scaled, CMYK converted), GIFs at their first frame. An image whose
    header declares more than MAX_PIXELS is refused (DataError) before anything is decoded."""
    from PIL import Image, ImageOps

    if isinstance(path, (str, os.PathLike)) and not stat.S_ISREG(os.stat(path).st_mode):
        raise DataError(f"{os.fspath(path)} is not a regular file.")  # a FIFO put there since the health check
    with Image.open(path) as image:  # reads the header only
        check_pixels(image)
        image.draft("RGB", (size * 2, size * 2))  # JPEG decodes at reduced scale: big photos stay cheap
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if pixels.max() > 255 else 255.0
            image = Image.fromarray(np.clip(pixels * (255.0 / peak), 0, 255).astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = fit_square(image.convert("RGB"), size, resize)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def decode_image(data: bytes, size: int, resize: str = "squish") -> torch.Tensor:
    """An uploaded file's bytes -> (3, size, size) uint8, or a DataError saying why it is not usable."""
    import io

    from PIL import Image

    try:
        return open_rgb(io.BytesIO(data), size, resize)
    except DataError:  # a ValueError too: said already, in its own words
        raise
    except Image.DecompressionBombError:
        raise DataError("That image has too many pixels to open safely; use a smaller copy.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise DataError("That file is not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF).") from None


def check_memory(n_images: int, size: int) -> None:
    needed = n_images * 3 * size * size
    if needed > MEMORY_BUDGET:
        raise DataError(f"{n_images:,} images at {size} px need {needed / 2**30:.1f} GB of memory once decoded; "
                        f"choose an image size of {int((MEMORY_BUDGET / (3 * n_images)) ** 0.5)} px or less.")
