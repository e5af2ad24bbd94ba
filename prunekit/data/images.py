"""One image for a model, from an uploaded file or a data set: decoded, checked, resized and center-cropped.

>>> u8 = read_image(Path("cat.png").read_bytes(), (3, 32, 32))   # uint8 (3, 32, 32), or ValueError saying why
>>> x = normalized(u8, "cifar10")                                 # float32, as the model expects its input

Every refusal is a ``ValueError`` whose message says what is wrong with the file and what is allowed.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from prunekit.data import normalization
from prunekit.errors import UserError

__all__ = ["read_image", "fit_image", "normalized", "FORMATS", "MIN_SIDE", "MAX_PIXELS"]

FORMATS = ("PNG", "JPEG")
MIN_SIDE = 8  # pixels: smaller images carry nothing to look at
MAX_PIXELS = 40_000_000  # 40 megapixels: larger files are refused before decoding
_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"}


def read_image(data: bytes, input_size: tuple[int, int, int]) -> torch.Tensor:
    """Decode a PNG or JPEG file's bytes into uint8 (C, H, W) for ``input_size`` (C, H, W): converted to RGB
    (C = 3) or grey (C = 1), the shorter side resized to fit, then center-cropped (:func:`fit_image`).

    ValueError for an empty, corrupt or other-format file, an image smaller than ``MIN_SIDE`` or larger than
    ``MAX_PIXELS``, or a pixel mode that has no colour meaning."""
    if not data:
        raise UserError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt, (w, h), mode = img.format, img.size, img.mode
            if fmt not in FORMATS:
                raise UserError(f"it is a {fmt or 'unknown'} file; upload a PNG or JPEG")
            _check_size(w, h)
            if mode not in _MODES:
                raise UserError(f"its pixel mode {mode!r} is not an image's; upload an RGB or greyscale PNG/JPEG")
            img.load()
    except ValueError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise UserError(f"it cannot be read as an image: {_unreadable(data, exc)}") from None
    arr = _to_array(img, input_size[0])
    return fit_image(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), input_size)


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


def _unreadable(data: bytes, exc: Exception) -> str:
    """Why PIL could not read ``data``, in words: not a PNG/JPEG at all (its first bytes), or one whose data are
    damaged. Never PIL's own message for an unidentified file, which shows a Python object."""
    kind = next((k for sig, k in _SIGNATURES.items() if data.startswith(sig)), None)
    if kind is None:
        return f"it is not a PNG or JPEG file: it starts with {data[:18]!r}; upload a PNG or JPEG"
    why = "PIL cannot make sense of it" if isinstance(exc, UnidentifiedImageError) else \
        (str(exc).strip() or type(exc).__name__)
    return f"it starts like a {kind}, but its data are damaged or cut short ({why}); upload the complete file again"


def _check_size(w: int, h: int) -> None:
    if min(w, h) < MIN_SIDE:
        raise UserError(f"it is {w}x{h} pixels; an image needs at least {MIN_SIDE} pixels on each side")
    if w * h > MAX_PIXELS:
        raise UserError(f"it is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); the limit is "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels: downscale it first")


def _to_array(img: Image.Image, channels: int) -> np.ndarray:
    """uint8 (H, W, channels); 16-bit and float greyscale scaled to 0..255 by their own range."""
    if img.mode in ("I;16", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi == lo else (a - lo) / (hi - lo) * 255.0
        img = Image.fromarray(a.round().astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        back = Image.new("RGBA", img.size, (255, 255, 255, 255))  # transparent pixels over white
        img = Image.alpha_composite(back, img.convert("RGBA"))
    arr = np.array(img.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def fit_image(image: torch.Tensor, input_size: tuple[int, int, int]) -> torch.Tensor:
    """uint8 (C, h, w) -> uint8 (C, H, W): the shorter side resized to cover (H, W) (bilinear, antialiased),
    then the center cropped; returned as is when it already has the size."""
    _, height, width = input_size
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    x = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[0, :, top:top + height, left:left + width].round().clamp(0, 255).to(torch.uint8)


def normalized(image: torch.Tensor, dataset: str) -> torch.Tensor:
    """uint8 (C, H, W) -> float32 (C, H, W) normalised with ``dataset``'s per-channel mean and std."""
    mean, std = normalization(dataset)
    c = image.shape[0]
    m = torch.tensor(mean[:c]).view(c, 1, 1)
    s = torch.tensor(std[:c]).view(c, 1, 1)
    return (image.float() / 255.0 - m) / s
