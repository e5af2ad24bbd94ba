"""Box-labelled probe sets (for Map-EX): generated from a 32x32 set, or read from a folder with ``boxes.csv``."""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from prunekit.data.sets import ArraySet
from prunekit.errors import DataNotFoundError, UserError

__all__ = ["BoxProbeSet", "load_box_probe", "make_box_probe", "save_box_probe"]

@dataclass
class BoxProbeSet:
    """Images with object boxes.

    images: uint8 (N, 3, S, S); boxes: N tensors of shape (k_i, 4), pixel corners [x0, y0, x1, y1)
    (x1, y1 exclusive); labels: int64 (N,) class of each image's object (-1 when unknown).
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def masks(self) -> torch.Tensor:
        """bool (N, S, S): True inside the union of each image's boxes."""
        n, _, h, w = self.images.shape
        out = torch.zeros(n, h, w, dtype=torch.bool)
        for i, bx in enumerate(self.boxes):
            for x0, y0, x1, y1 in bx.round().long().tolist():
                out[i, max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
        return out


def make_box_probe(
    source: ArraySet,
    n: int = 256,
    *,
    canvas: int = 64,
    scale: tuple[float, float] = (0.75, 1.5),
    background: str = "texture",
    seed: int = 0,
) -> BoxProbeSet:
    """Paste ``n`` objects from ``source`` at random positions and scales onto ``canvas`` x ``canvas`` images.

    Each object (a 32x32 image) is resized to s = round(32 * u) pixels, u ~ U(scale), and pasted at a random
    (x0, y0); its box is exactly [x0, y0, x0 + s, y0 + s). The background is another image of ``source``
    upscaled to the canvas (``"texture"``) or uniform noise (``"noise"``).
    """
    if background not in ("texture", "noise"):
        raise UserError(f"background must be 'texture' or 'noise', got {background!r}")
    if canvas < 32:
        raise UserError(f"canvas must be at least 32 pixels, got {canvas}")
    lo, hi = scale
    if not (0 < lo <= hi) or round(32 * hi) > canvas:
        raise UserError(f"scale must satisfy 0 < low <= high and 32 * high <= canvas ({canvas}), got {scale}")
    g = torch.Generator().manual_seed(seed)
    objects = torch.randint(0, len(source), (n,), generator=g)
    images = torch.empty(n, 3, canvas, canvas, dtype=torch.uint8)
    boxes = []
    for i, k in enumerate(objects.tolist()):
        if background == "texture":
            j = (k + 1 + int(torch.randint(0, len(source) - 1, (1,), generator=g))) % len(source)
            bg = F.interpolate(source.images[j : j + 1].float(), size=(canvas, canvas), mode="bilinear")
            images[i] = bg[0].round().clamp(0, 255).to(torch.uint8)
        else:
            images[i] = torch.randint(0, 256, (3, canvas, canvas), generator=g, dtype=torch.uint8)
        s = round(32 * (lo + (hi - lo) * float(torch.rand(1, generator=g))))
        obj = F.interpolate(source.images[k : k + 1].float(), size=(s, s), mode="bilinear", antialias=True)
        x0 = int(torch.randint(0, canvas - s + 1, (1,), generator=g))
        y0 = int(torch.randint(0, canvas - s + 1, (1,), generator=g))
        images[i, :, y0 : y0 + s, x0 : x0 + s] = obj[0].round().clamp(0, 255).to(torch.uint8)
        boxes.append(torch.tensor([[x0, y0, x0 + s, y0 + s]], dtype=torch.float32))
    return BoxProbeSet(images, boxes, source.labels[objects].clone(), list(source.classes))


def save_box_probe(probe: BoxProbeSet, folder: str | os.PathLike) -> Path:
    """Write the box-labelled format: PNG images plus ``boxes.csv`` (file,x0,y0,x1,y1,label; one row per box)."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "boxes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "x0", "y0", "x1", "y1", "label"])
        for i, (img, bx) in enumerate(zip(probe.images, probe.boxes)):
            name = f"{i:05d}.png"
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / name)
            for x0, y0, x1, y1 in bx.tolist():
                writer.writerow([name, x0, y0, x1, y1, int(probe.labels[i])])
    return folder


def load_box_probe(folder: str | os.PathLike, *, size: int | None = None) -> BoxProbeSet:
    """Read a folder of images with ``boxes.csv`` (columns file,x0,y0,x1,y1[,label]; pixel corners, x1/y1
    exclusive). Images are resized to ``size`` x ``size`` (boxes scaled alike); without ``size`` they must
    all be square and of one size. Errors name the file and the row at fault."""

    folder = Path(folder)
    table = folder / "boxes.csv"
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise UserError(f"size must be a whole number of pixels >= 8, got {size!r}")
    if not table.is_file():
        raise DataNotFoundError(
            f"{table} not found: a box-labelled probe set is a folder of images with a boxes.csv "
            "(columns file,x0,y0,x1,y1[,label], one row per box)"
        )
    rows = _read_rows(table)
    images, boxes, labels = [], [], []
    for name, entries in rows.items():
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents:
            raise UserError(f"{table}: {name!r} points outside {folder}")
        try:
            img = Image.open(path).convert("RGB")
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise UserError(f"{table}: cannot read image {name!r} ({type(exc).__name__}: {exc})") from None
        w, h = img.size
        bx = torch.tensor([b for b, _ in entries], dtype=torch.float32)
        if (bx[:, 0] < 0).any() or (bx[:, 1] < 0).any() or (bx[:, 2] > w).any() or (bx[:, 3] > h).any():
            raise UserError(f"{table}: a box of {name!r} lies outside its {w}x{h} image")
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR)
            bx = bx * torch.tensor([size / w, size / h, size / w, size / h])
        elif w != h or (images and images[0].shape[-1] != w):
            raise UserError(f"{table}: images differ in size or are not square ({name!r} is {w}x{h}); pass size=")
        images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        boxes.append(bx)
        labels.append(entries[0][1])
    return BoxProbeSet(torch.stack(images), boxes, torch.tensor(labels, dtype=torch.int64))


def _read_rows(table: Path) -> dict[str, list[tuple[list[float], int]]]:
    """{image file: [(box [x0, y0, x1, y1], label), ...]} from ``boxes.csv``; UserError naming the file and the line
    of a row that would give a wrong box: missing columns, a corner that is not a finite number, x1 <= x0 or
    y1 <= y0, a label that is not a class number (or -1, or empty: unknown), one image given two labels, no file
    name."""
    rows: dict[str, list[tuple[list[float], int]]] = {}
    first_label: dict[str, tuple[int, int]] = {}  # file -> (its label, the line that gave it)
    try:
        with open(table, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"file", "x0", "y0", "x1", "y1"} - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{table}: missing columns {sorted(missing)}; expected file,x0,y0,x1,y1[,label]")
            for line, row in enumerate(reader, start=2):
                name, box, label = _parse_row(table, line, row)
                if first_label.setdefault(name, (label, line))[0] != label:
                    raise UserError(f"{table} line {line}: {name!r} has label {label}, and label "
                                    f"{first_label[name][0]} on an earlier line (line {first_label[name][1]}); an "
                                    "image has one class")
                rows.setdefault(name, []).append((box, label))
    except UnicodeDecodeError:
        raise UserError(f"{table}: not a text CSV file (file,x0,y0,x1,y1[,label], UTF-8)") from None
    if not rows:
        raise UserError(f"{table} lists no boxes")
    return rows


def _parse_row(table: Path, line: int, row: dict) -> tuple[str, list[float], int]:
    """(file name, box, label: -1 when empty) of one row of ``boxes.csv``; UserError naming the line."""
    name = (row.get("file") or "").strip()
    if not name:
        raise UserError(f"{table} line {line}: no file name (the first column names the image)")
    try:
        box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise UserError(f"{table} line {line}: box corners must be finite numbers, got "
                        f"{[row.get(k) for k in ('x0', 'y0', 'x1', 'y1')]}")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise UserError(f"{table} line {line}: need x0 < x1 and y0 < y1, got {box}")
    text = (row.get("label") or "").strip()
    if text and not (text.isdigit() or text == "-1"):
        raise UserError(f"{table} line {line}: label must be a class number (0, 1, ...) or empty, got {text!r}")
    return name, box, int(text) if text else -1
