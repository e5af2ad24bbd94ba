"""Map-EX: foreground versus background response of each filter, from bounding boxes (seed 001).

Source: seed 001 (abstract only): per-layer feature maps; the response intensity of foreground and background
is taken from bounding-box labels; filters that respond to the task's objects are kept; "Map-EX" expands the
boxes by the receptive field.
Reconstructed (methods.md): for a layer with total stride s and receptive field r, each box is mapped to
feature coordinates (divided by s) and, with ``expand=True``, grown by r / (2 s) on every side. A feature cell
(u, v) covers [u, u+1) x [v, v+1) and is foreground when its centre (u + 0.5, v + 0.5) lies **strictly**
inside a mapped (and grown) box: x0 - g < u + 0.5 < x1 + g, and the same for v, with g the growth.

The receptive-field rule (``expand=True``, g = r / (2 s)): the cell's receptive field, the r pixels centred on
the cell's centre, must *overlap* the box over a positive length on both axes, i.e. see part of the object. A
field that only *touches* the box's edge sees none of it and is background. At stride 1 (odd r) this is
exactly "the receptive field shares at least one pixel with the box"; at larger strides the field is taken as
centred on the s x s pixels the cell covers (padding offsets ignored). Why not edges included: touching fields
would count, and a 3x3 conv on an 8x8 map with a 4x4 box [2, 6) would have every cell foreground (centres 0.5
and 7.5 lie on the grown edges 0.5 and 7.5) and the image would be skipped; under this rule cells 1..6 are
foreground (their fields, pixels u-1..u+1, reach pixels 2..5) and the ring of 28 cells is background. With
``expand=False`` (plain Map, g = 0) a cell whose centre lies exactly on the box's edge (half covered) is
background on both sides, so the rule stays symmetric.

For filter c on image i: R_fg = mean |F| over the foreground cells, R_bg = mean |F| over the others;
score = mean over images of R_fg / (R_bg + eps).

Images with no cell inside, or no cell outside, at a layer (a box smaller than a cell; expanded boxes that
cover the whole map, common deep in a network) carry no contrast there and are skipped; ``info["images"]``
gives, per layer, how many images counted. A layer where none counted scores 1.0 (no contrast) for every
filter. One streamed pass serves every layer (the probe is read once); memory is O(C) per layer.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.criteria.base import Criterion, Param, Scores, register_criterion
from prunekit.criteria.probe import Batch, Probe
from prunekit.criteria.streaming import Progress, Ticker, stream
from prunekit.models.layers import ConvLayer

__all__ = ["MapEX", "box_masks", "expanded_boxes"]


def box_masks(boxes: list[torch.Tensor], height: int, width: int, stride: int, grow: float) -> torch.Tensor:
    """Union of each image's boxes on a feature grid.

    boxes: B tensors (k_i, 4) of pixel corners [x0, y0, x1, y1); stride: the layer's total stride; grow: cells
    added on every side (r / (2 s) for Map-EX). Returns bool (B, height, width): True where the cell's centre
    lies strictly inside one of the image's boxes after mapping and growing (see the module docstring).
    """
    device = boxes[0].device if boxes else torch.device("cpu")
    out = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=device)
    if not boxes or sum(len(b) for b in boxes) == 0:
        return out
    owner = torch.cat([torch.full((len(b),), i, device=device) for i, b in enumerate(boxes)])
    feat = torch.cat(boxes).float() / stride
    x0, y0, x1, y1 = feat[:, 0] - grow, feat[:, 1] - grow, feat[:, 2] + grow, feat[:, 3] + grow
    cu = torch.arange(width, device=device) + 0.5
    cv = torch.arange(height, device=device) + 0.5
    inside_x = (x0[:, None] < cu) & (cu < x1[:, None])  # (K, W)
    inside_y = (y0[:, None] < cv) & (cv < y1[:, None])  # (K, H)
    per_box = (inside_y[:, :, None] & inside_x[:, None, :]).float()  # (K, H, W)
    return out.float().index_add_(0, owner, per_box) > 0


def expanded_boxes(boxes: torch.Tensor, receptive_field: int, expand: bool = True) -> torch.Tensor:
    """Boxes (k, 4) of pixel corners [x0, y0, x1, y1) as Map-EX grows them at a layer of receptive field r, in
    pixels: r / 2 on every side (the r / (2 s) feature cells of :func:`box_masks` at total stride s), not
    clipped to the image; unchanged when not ``expand`` (plain Map). For drawing what a layer counts as
    foreground: a cell is foreground when its centre lies strictly inside the drawn box (a cell whose receptive
    field only touches the object's box is not)."""
    grow = receptive_field / 2 if expand else 0.0
    return boxes.float() + torch.tensor([-grow, -grow, grow, grow])


@register_criterion
class MapEX(Criterion):
    """Map-EX; see the module docstring."""

    name = "mapex"
    unit = "foreground / background response"
    seed_doc = 1
    revision = 2  # a receptive field that only touches a box no longer makes its cell foreground
    description = (
        "Map-EX (seed 001): ratio of a filter's mean |response| inside the object boxes to outside, averaged "
        "over a box-labelled probe set; high = responds to the objects. Established: foreground/background "
        "response from boxes, expansion by the receptive field. Reconstructed: boxes divided by the layer's "
        "total stride and grown by r/(2s) per side (expand=True); a cell is foreground when its centre lies "
        "strictly inside a grown box, i.e. its receptive field overlaps the object's box (touching its edge is "
        "not enough); score = mean_i R_fg / (R_bg + eps); images without both regions at a layer are skipped."
    )
    params = (
        Param("expand", True, "grow the boxes by half the receptive field (Map-EX: cells whose receptive field "
              "overlaps a box) or not (Map: cells whose centre is inside a box)"),
        Param("eps", 1e-6, "added to the background response", low=0.0, open_low=True, high=1.0),
    )
    needs_data = True
    needs_boxes = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        eps, expand = self.config["eps"], self.config["expand"]
        sums: dict[str, torch.Tensor] = {}
        used: dict[str, torch.Tensor] = {}

        def accumulate(layer: ConvLayer, fmap: torch.Tensor, batch: Batch) -> None:
            h, w = fmap.shape[-2:]
            grow = layer.receptive_field / (2 * layer.stride) if expand else 0.0
            fg = box_masks(batch.boxes, h, w, layer.stride, grow)[:, None].to(fmap.dtype)  # (B, 1, h, w)
            n_fg = fg.sum((2, 3))  # (B, 1)
            n_bg = h * w - n_fg
            valid = ((n_fg > 0) & (n_bg > 0))[:, 0]
            mag = fmap.abs()
            in_fg = (mag * fg).sum((2, 3))  # (B, C)
            r_fg = in_fg / n_fg.clamp_min(1)
            r_bg = (mag.sum((2, 3)) - in_fg) / n_bg.clamp_min(1)
            ratio = (r_fg / (r_bg + eps))[valid].double().sum(0)  # (C,)
            sums[layer.name] = sums[layer.name] + ratio if layer.name in sums else ratio
            used[layer.name] = used[layer.name] + valid.sum() if layer.name in used else valid.sum()

        stream(model, layers, probe, accumulate, Ticker(len(probe), progress))
        counted = {name: int(n) for name, n in used.items()}
        scores = {  # a layer where no image counted: no contrast, every filter 1.0
            la.name: sums[la.name] / counted[la.name] if counted[la.name] else torch.ones(la.out_channels)
            for la in layers
        }
        return Scores(scores, {"images": counted})
