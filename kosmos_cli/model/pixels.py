"""The model's pixels: resized to uint8 on the image loaders, collated a batch at a time, normalised on the device.

An image loader resizes an image to the model's size and hands on uint8 (3, H, W) (`ClipPixels.chw`): a quarter of
the bytes of the float32 the processor makes. `collate` stacks a batch's images into one host tensor (pinned when the
model is on CUDA, so that its copy to the device is asynchronous), and `Collated.on_device` copies it over with
`non_blocking=True` and rescales and normalises it there, in the model's dtype, through a table of the 256 values a
channel can take: the processor's own float32 arithmetic, computed once, so the vision encoder's input is the
processor's pixel_values, bit for bit (cast to the model's dtype as before). A processor ClipPixels cannot mirror
keeps its own float32 output, which is collated and cast the same way. torch is imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .device import host_empty


class ClipPixels:
    """What a PIL-backed CLIP image processor (Kosmos-2's) makes of an RGB image, computed directly.

    The processor resizes with Pillow to a fixed size, then rescales (in float64, to float32) and normalises each
    channel (in float32), in several passes of Python and numpy. A uint8 value has 256 possible results per channel,
    so they are computed once into `table` with the processor's own arithmetic, and an image's pixels are one
    Pillow resize and one lookup: the same float32 values, bit for bit, at a fraction of the cost.
    """

    def __init__(self, height: int, width: int, resample: int, scale: float, mean, std):
        import numpy as np

        self.size, self.resample = (width, height), resample
        values = (np.arange(256, dtype=np.float64) * scale).astype(np.float32)  # the processor's rescale
        mean32, std32 = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
        self.table = np.stack([(values - mean32[c]) / std32[c] for c in range(3)])  # its normalise: (3, 256)
        self._tables: dict[tuple[str, str], Any] = {}  # the table on a device in a dtype, by (device, dtype)

    @classmethod
    def of(cls, processor) -> ClipPixels | None:
        """ClipPixels for `processor` when it is one we compute exactly (Pillow backend, a fixed output size,
        rescale and normalise on, a centre crop to that same size or none, no padding); otherwise None."""
        try:
            if getattr(processor, "backend", None) != "pil" or getattr(processor, "do_pad", None):
                return None
            size, crop = processor.size, processor.crop_size
            height, width = size.height, size.width
            if not (processor.do_resize and processor.do_rescale and processor.do_normalize and height and width):
                return None
            if processor.do_center_crop and (crop.height, crop.width) != (height, width):
                return None
            mean, std = list(processor.image_mean), list(processor.image_std)
            if len(mean) != 3 or len(std) != 3 or getattr(processor, "reducing_gap", None) is not None:
                return None
            resample = processor.resample if processor.resample is not None else 2  # the backend's default: bilinear
            return cls(int(height), int(width), int(resample), float(processor.rescale_factor), mean, std)
        except (AttributeError, TypeError, ValueError):
            return None

    @classmethod
    def default(cls) -> ClipPixels:
        """Kosmos-2's own settings (224 x 224, bicubic, CLIP's mean and std)."""
        return cls(224, 224, 3, 1 / 255, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

    def resized(self, image):
        """The image at the model's size: uint8 (H, W, 3)."""
        import numpy as np

        return np.asarray(image.resize(self.size, resample=self.resample))

    def chw(self, image):
        """What an image loader hands on: the image at the model's size, uint8 (3, H, W), contiguous."""
        import numpy as np

        return np.ascontiguousarray(self.resized(image).transpose(2, 0, 1))

    def normalised(self, chw):
        """uint8 (3, H, W) -> the processor's float32 (3, H, W), on the CPU."""
        import numpy as np

        return np.stack([self.table[c].take(chw[c]) for c in range(3)])

    def __call__(self, image):
        """The processor's pixels, on the CPU: float32 (3, H, W)."""
        return self.normalised(self.chw(image))

    def on(self, device, dtype):
        """The table on `device` in `dtype`, flat (3 x 256), made once per (device, dtype)."""
        import torch

        key = (str(device), str(dtype))
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = torch.from_numpy(self.table).to(device, dtype).flatten()
        return table

    def normalise(self, pixels, dtype):
        """uint8 (B, 3, H, W) on the device -> the processor's values there, in `dtype` (a lookup: no arithmetic of
        its own, so the values are the CPU's float32, cast). On the CPU numpy's lookup does it (a quarter of the
        cost of torch's gather there); elsewhere a gather on the device."""
        import numpy as np
        import torch

        if pixels.device.type == "cpu":
            values = pixels.numpy()
            return torch.from_numpy(np.stack([self.table[c].take(values[:, c]) for c in range(3)], 1)).to(dtype)
        return self.gather(pixels, dtype)

    def gather(self, pixels, dtype):
        """The lookup as a gather on `pixels`' own device (what CUDA runs; the tests run it on the CPU too)."""
        import torch

        offsets = torch.arange(0, 3 * 256, 256, device=pixels.device, dtype=torch.int32).view(1, 3, 1, 1)
        return self.on(pixels.device, dtype)[pixels.int() + offsets]


@dataclass
class Collated:
    """A batch of prepared requests, its pixels collated once: `pixels` (images, 3, H, W) in host memory, uint8 to be
    normalised on the device (`clip` says how) or the processor's float32; `index[i]`: request i's image in it."""

    requests: Sequence[Any]  # the engine's Prepared, in order
    pixels: Any  # a torch tensor on the CPU, pinned when the model is on CUDA
    index: tuple[int, ...]
    clip: ClipPixels | None  # set when `pixels` is uint8

    def __len__(self) -> int:
        return len(self.requests)

    def piece(self, start: int, stop: int) -> Collated:
        """Requests start..stop, and the images they use (a view of `pixels`: nothing copied)."""
        index = self.index[start:stop]
        low, high = min(index), max(index) + 1
        return Collated(self.requests[start:stop], self.pixels[low:high], tuple(i - low for i in index), self.clip)

    def on_device(self, device, dtype):
        """The vision encoder's input: the pixels copied to `device` (asynchronously from pinned memory) and, when
        uint8, rescaled and normalised there; in `dtype`."""
        pixels = self.pixels.to(device, non_blocking=True)
        if self.clip is not None:
            return self.clip.normalise(pixels, dtype)
        return pixels.to(dtype)


def collate(requests: Sequence[Any], clip: ClipPixels | None, pin: bool) -> Collated:
    """`requests` (each with an `image_key` and `pixel_values`) collated: each distinct image once, in order of first
    use, stacked into one host tensor (pinned when `pin`: the model is on CUDA). uint8 pixels stay uint8 to be
    normalised on the device; when some request holds the processor's float32 (an image ClipPixels does not take),
    the batch is float32, its uint8 images normalised here."""
    import numpy as np
    import torch

    first: dict[Any, int] = {}
    arrays: list[Any] = []
    for p in requests:
        if p.image_key not in first:
            first[p.image_key] = len(arrays)
            arrays.append(p.pixel_values)
    index = tuple(first[p.image_key] for p in requests)
    raw = clip is not None and all(a.dtype == np.uint8 for a in arrays)
    if not raw:
        if any(a.dtype == np.uint8 for a in arrays) and clip is None:
            raise ValueError("uint8 pixels need the ClipPixels they were made with")
        arrays = [clip.normalised(a) if a.dtype == np.uint8 else a for a in arrays]  # type: ignore[union-attr]
    dtype = torch.uint8 if raw else torch.float32
    pixels = host_empty((len(arrays), *arrays[0].shape), dtype, pin)
    np.stack(arrays, out=pixels.numpy())
    return Collated(requests, pixels, index, clip if raw else None)
