"""prunekit.data.images: uploaded images decoded, fitted to the model's input, and odd files refused with a reason."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from prunekit.data import images
from prunekit.criteria.mapex import box_masks, expanded_boxes
from prunekit.data.images import fit_image, normalized, read_image


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_a_wide_rgb_png_is_resized_and_center_cropped():
    a = np.zeros((40, 80, 3), dtype=np.uint8)
    a[:, 20:60] = 200  # the centre square is bright, the sides dark
    out = read_image(_encode(Image.fromarray(a)), (3, 32, 32))
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    assert int(out[:, :, 2:30].min()) >= 190  # the crop kept the centre only


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_other_modes_are_converted(mode):
    img = Image.new("RGB", (48, 48), (10, 120, 250)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = read_image(_encode(img, fmt), (3, 32, 32))
    assert out.shape == (3, 32, 32)
    grey = read_image(_encode(img, fmt), (1, 28, 28))
    assert grey.shape == (1, 28, 28)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"not an image at all", "cannot be read"),
    (_encode(Image.new("RGB", (64, 64)))[:60], "cannot be read"),  # truncated
    (_encode(Image.new("RGB", (4, 64))), "at least 8 pixels"),
    (_encode(Image.new("RGB", (16, 16)), "GIF"), "upload a PNG or JPEG"),
])
def test_odd_files_are_refused_with_a_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        read_image(data, (3, 32, 32))


def test_a_huge_image_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ValueError, match="megapixels"):
        read_image(_encode(Image.new("RGB", (50, 50))), (3, 32, 32))


def test_fit_image_keeps_an_image_of_the_right_size():
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert fit_image(x, (3, 32, 32)) is x


def test_normalized_uses_the_data_set_statistics():
    white = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    mean, std = images.normalization("cifar10")
    x = normalized(white, "cifar10")
    assert torch.allclose(x[:, 0, 0], (1 - torch.tensor(mean)) / torch.tensor(std))


def test_expanded_boxes_are_what_box_masks_counts_as_foreground():
    boxes = torch.tensor([[10.0, 20.0, 42.0, 52.0]])
    for stride, rf in ((1, 3), (2, 17), (4, 41)):
        grown = expanded_boxes(boxes, rf)
        assert grown.tolist() == [[10 - rf / 2, 20 - rf / 2, 42 + rf / 2, 52 + rf / 2]]
        side = 64 // stride
        expected = box_masks([boxes], side, side, stride, rf / (2 * stride))
        plain = box_masks([grown], side, side, stride, 0.0)
        assert torch.equal(expected, plain)
    assert torch.equal(expanded_boxes(boxes, 17, expand=False), boxes)


def _png_with_a_bad_crc() -> bytes:
    data = bytearray(_encode(Image.new("RGB", (64, 64), (1, 2, 3))))
    data[40] ^= 0xFF  # inside the first chunk: its checksum no longer matches
    return bytes(data)


@pytest.mark.parametrize("data, reason", [
    (b"not an image at all", "it is not a PNG or JPEG file: it starts with b'not an image at al'"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "it is not a PNG or JPEG file: it starts with b'<svg"),
    (_png_with_a_bad_crc(), "it starts like a PNG, but its data are damaged"),
    (_encode(Image.new("RGB", (64, 64)))[:60], "it starts like a PNG, but its data are damaged"),
    (_encode(Image.new("RGB", (64, 64)), "JPEG")[:300], "it starts like a JPEG, but its data are damaged"),
])
def test_an_odd_upload_is_explained_in_words_not_a_python_object(data, reason):
    with pytest.raises(ValueError) as err:
        read_image(data, (3, 32, 32))
    message = str(err.value)
    assert reason in message and "object at 0x" not in message and "<_io" not in message
    assert "upload" in message  # what to do
