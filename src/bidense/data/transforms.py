"""Joint image + target transforms, deterministic under a seed.

Every transform is called as ``t(image, target, rng) -> (image, target)`` where ``image`` is an
``(H, W, 3)`` numpy array (uint8, or float32 in [0, 1] after :class:`PhotometricJitter`; float32
normalised after :class:`Normalize`), ``target`` is an ``(H, W)`` numpy array (class ids, metric
depth, or a {0, 1} mask; ``None`` is allowed) and ``rng`` is a :class:`numpy.random.Generator`
(or an int seed, or ``None`` for the transform's own generator). Geometric transforms move image
and target together: images are resampled bilinearly, targets with nearest neighbour so that class
ids and metric depths are never blended. :class:`ToTensor` ends a pipeline and returns torch
tensors. Only numpy, PIL and torch are used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import tasks
from .io import as_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TASKS",
    "JointTransform",
    "Compose",
    "Resize",
    "RandomScale",
    "RandomCrop",
    "CenterCrop",
    "Crop",
    "RandomHorizontalFlip",
    "PhotometricJitter",
    "RandomRotation",
    "Normalize",
    "ToTensor",
    "target_fill_for",
    "train_transforms",
    "eval_transforms",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: the task names (:data:`bidense.tasks.TASKS`)
TASKS: tuple[str, ...] = tuple(tasks.TASKS)


def _as_rng(rng: np.random.Generator | int | None, own: np.random.Generator) -> np.random.Generator:
    if rng is None:
        return own
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def target_fill_for(task: str, ignore_index: int = 255) -> float:
    """Fill value for target pixels created by padding/rotation (``TaskSpec.target_fill``):
    ignore for seg/road, 0 otherwise (depth 0 means invalid; saliency padding is background).
    """
    return tasks.get_task(task).fill_value(ignore_index)


class JointTransform:
    """Base class: holds its own generator (from ``seed``) used when no ``rng`` is passed."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def rng(self, rng: np.random.Generator | int | None) -> np.random.Generator:
        """Return the generator to use for one call."""
        return _as_rng(rng, self._rng)

    def __call__(self, image: np.ndarray, target: np.ndarray | None = None,
                 rng: np.random.Generator | int | None = None) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(JointTransform):
    """Apply transforms in order, passing one generator through all of them.

    With ``seed`` set, a fresh ``Compose`` replays the same random sequence; passing ``rng``
    (a Generator or int) to a call makes that call deterministic on its own, which is how the
    datasets seed augmentation per (seed, epoch, index).
    """

    def __init__(self, transforms: Sequence[Callable[..., Any]], seed: int | None = None) -> None:
        super().__init__(seed)
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, target: np.ndarray | None = None,
                 rng: np.random.Generator | int | None = None) -> Any:
        g = self.rng(rng)
        out: Any = (image, target)
        for t in self.transforms:
            out = t(out[0], out[1], g)
        return out


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    # PIL resizes float images one "F" channel at a time.
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32))
                        .resize((w, h), Image.BILINEAR)) for c in range(image.shape[2])]
    return np.stack(chans, axis=-1).astype(np.float32)


def _resize_nearest(target: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    ih, iw = target.shape[:2]
    if (ih, iw) == (h, w):
        return target
    # Source index of each output pixel centre: floor((i + 0.5) * in / out).
    rows = np.minimum(((np.arange(h) + 0.5) * ih / h).astype(np.int64), ih - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * iw / w).astype(np.int64), iw - 1)
    return target[rows[:, None], cols[None, :]]


class Resize(JointTransform):
    """Resize to ``size`` = (H, W); an int resizes the *short* side to ``size`` keeping aspect.

    Image bilinear (PIL, antialiased when shrinking), target nearest.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = size if isinstance(size, int) else tuple(int(s) for s in size)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """Output (H, W) for an input of (h, w)."""
        if isinstance(self.size, int):
            s = self.size / min(h, w)
            return (max(1, round(h * s)), max(1, round(w * s)))
        return as_size(self.size)

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        size = self.out_size(*image.shape[:2])
        return _resize_image(image, size), (None if target is None else
                                            _resize_nearest(target, size))


class RandomScale(JointTransform):
    """Rescale by a factor ``s ~ U(scale_range)``, aspect kept.

    With ``base_size`` set, the long side becomes ``int(base_size * s)`` (DANet/BiDense recipe:
    base 520, s in [0.5, 2]); otherwise both sides are multiplied by ``s``.
    """

    def __init__(self, scale_range: Sequence[float] = (0.5, 2.0), base_size: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(seed)
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.scale_range = (float(lo), float(hi))
        self.base_size = base_size

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        s = float(self.rng(rng).uniform(*self.scale_range))
        h, w = image.shape[:2]
        if self.base_size is not None:
            long = int(self.base_size * s)
            if h >= w:
                size = (long, max(1, round(w * long / h)))
            else:
                size = (max(1, round(h * long / w)), long)
        else:
            size = (max(1, round(h * s)), max(1, round(w * s)))
        return _resize_image(image, size), (None if target is None else
                                            _resize_nearest(target, size))


def _pad_to(arr: np.ndarray, h: int, w: int, fill: float) -> np.ndarray:
    ph, pw = max(0, h - arr.shape[0]), max(0, w - arr.shape[1])
    if ph == 0 and pw == 0:
        return arr
    widths = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, widths, mode="constant", constant_values=fill)


class Crop(JointTransform):
    """Fixed crop ``(top, left, height, width)`` (e.g. the BTS NYU box 45, 43, 427, 565)."""

    def __init__(self, top: int, left: int, height: int, width: int) -> None:
        super().__init__()
        self.top, self.left, self.height, self.width = top, left, height, width

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        h, w = image.shape[:2]
        if self.top + self.height > h or self.left + self.width > w:
            raise ValueError(f"Crop box {self.top, self.left, self.height, self.width} exceeds "
                             f"image size {h}x{w} (HxW)")
        sl = (slice(self.top, self.top + self.height), slice(self.left, self.left + self.width))
        return image[sl], (None if target is None else target[sl])


class RandomCrop(JointTransform):
    """Random ``size`` crop; smaller inputs are first padded at the right/bottom.

    Padding uses ``image_fill`` for the image and ``target_fill`` for the target (255 ignore for
    segmentation/road, 0 = invalid for depth; see :func:`target_fill_for`).
    """

    def __init__(self, size: int | Sequence[int], image_fill: float = 0.0,
                 target_fill: float = 255.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.size = as_size(size)
        self.image_fill = image_fill
        self.target_fill = target_fill

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        ch, cw = self.size
        g = self.rng(rng)
        image = _pad_to(image, ch, cw, self.image_fill)
        if target is not None:
            target = _pad_to(target, ch, cw, self.target_fill)
        h, w = image.shape[:2]
        top = int(g.integers(0, h - ch + 1))
        left = int(g.integers(0, w - cw + 1))
        sl = (slice(top, top + ch), slice(left, left + cw))
        return image[sl], (None if target is None else target[sl])


class CenterCrop(JointTransform):
    """Centre crop to ``size`` (padding right/bottom like :class:`RandomCrop` if smaller)."""

    def __init__(self, size: int | Sequence[int], image_fill: float = 0.0,
                 target_fill: float = 255.0) -> None:
        super().__init__()
        self.size = as_size(size)
        self.image_fill = image_fill
        self.target_fill = target_fill

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        ch, cw = self.size
        image = _pad_to(image, ch, cw, self.image_fill)
        if target is not None:
            target = _pad_to(target, ch, cw, self.target_fill)
        h, w = image.shape[:2]
        top, left = (h - ch) // 2, (w - cw) // 2
        sl = (slice(top, top + ch), slice(left, left + cw))
        return image[sl], (None if target is None else target[sl])


class RandomHorizontalFlip(JointTransform):
    """Mirror image and target left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__(seed)
        self.p = p

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        if self.rng(rng).random() < self.p:
            image = image[:, ::-1]
            target = None if target is None else target[:, ::-1]
        return np.ascontiguousarray(image), (None if target is None
                                             else np.ascontiguousarray(target))


def _to_float01(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32, copy=False)


class PhotometricJitter(JointTransform):
    """BTS-style colour augmentation, applied with probability ``p`` (image only).

    ``x' = clip(x**gamma * brightness * colour_c, 0, 1)`` with ``gamma ~ U(gamma)``,
    ``brightness ~ U(brightness)`` and one ``colour_c ~ U(colour)`` per channel (Lee et al.,
    "From Big to Small", BTS, 2019). The image is returned as float32 in [0, 1].
    """

    def __init__(self, p: float = 0.5, gamma: Sequence[float] = (0.9, 1.1),
                 brightness: Sequence[float] = (0.75, 1.25),
                 colour: Sequence[float] = (0.9, 1.1), seed: int | None = None) -> None:
        super().__init__(seed)
        self.p = p
        self.gamma = tuple(gamma)
        self.brightness = tuple(brightness)
        self.colour = tuple(colour)

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        g = self.rng(rng)
        x = _to_float01(image)
        if g.random() < self.p:
            gamma = g.uniform(*self.gamma)
            bright = g.uniform(*self.brightness)
            colour = g.uniform(*self.colour, size=3)
            x = np.clip(x**gamma * bright * colour.astype(np.float32), 0.0, 1.0).astype(np.float32)
        return x, target


def _rotate_channel(arr: np.ndarray, angle: float, resample: int, fill: float) -> np.ndarray:
    if arr.dtype == np.uint8:
        im = Image.fromarray(arr)
        fillcolor: Any = int(fill)
    else:
        im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
        fillcolor = float(fill)
    return np.asarray(im.rotate(angle, resample=resample, fillcolor=fillcolor))


class RandomRotation(JointTransform):
    """Rotate by ``angle ~ U(-degrees, degrees)`` about the centre, with probability ``p``.

    The image is resampled bilinearly, the target with nearest neighbour (depth values are never
    blended across edges, as in BTS); uncovered pixels get ``image_fill`` / ``target_fill``.
    """

    def __init__(self, degrees: float = 2.5, p: float = 1.0, image_fill: float = 0.0,
                 target_fill: float = 0.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.degrees = float(degrees)
        self.p = p
        self.image_fill = image_fill
        self.target_fill = target_fill

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        g = self.rng(rng)
        angle = float(g.uniform(-self.degrees, self.degrees))
        if not g.random() < self.p or angle == 0.0:
            return image, target
        if image.dtype == np.uint8:
            out = _rotate_channel(image, angle, Image.BILINEAR, self.image_fill)
        else:
            out = np.stack([_rotate_channel(image[..., c], angle, Image.BILINEAR, self.image_fill)
                            for c in range(image.shape[2])], axis=-1)
        if target is not None:
            dtype = target.dtype
            t = _rotate_channel(target.astype(np.float32), angle, Image.NEAREST, self.target_fill)
            target = t.astype(dtype)
        return out, target


class Normalize(JointTransform):
    """``(x - mean) / std`` per channel on x in [0, 1] (uint8 input is divided by 255 first)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        x = _to_float01(image)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((x - mean) / std).astype(np.float32), target


def target_to_tensor(target: np.ndarray, task: str) -> torch.Tensor:
    """Convert a numpy target to the dataset convention for ``task`` (``TaskSpec.target_dtype``).

    Class ids (``seg``): int64 ``(H, W)``; one-channel maps (``depth``/``saliency``/``road``):
    float32 ``(1, H, W)``, the layout of the model's output.
    """
    spec = tasks.get_task(task)
    t = torch.from_numpy(np.ascontiguousarray(target).astype(spec.target_dtype))
    return t if spec.multiclass else t[None]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 (scaled by 1/255) or float array -> float32 ``(3, H, W)`` tensor."""
    x = _to_float01(image)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class ToTensor(JointTransform):
    """Convert to torch: image float32 ``(3, H, W)``; target per ``task`` (see target_to_tensor).

    With ``task=None`` the target layout follows its dtype: integer -> ``seg`` (int64 ``(H, W)``),
    floating -> float32 ``(1, H, W)`` (the datasets load depth/saliency/road as float32).
    """

    def __init__(self, task: str | None = None) -> None:
        super().__init__()
        if task is not None:
            tasks.get_task(task)
        self.task = task

    def __call__(self, image, target=None, rng=None):  # noqa: D102
        if target is None:
            return image_to_tensor(image), None
        task = self.task
        if task is None:
            task = "seg" if np.issubdtype(np.asarray(target).dtype, np.integer) else "depth"
        return image_to_tensor(image), target_to_tensor(target, task)


def train_transforms(task: str, crop_size: int | Sequence[int],
                     scale_range: Sequence[float] | None = None, base_size: int | None = None,
                     rotation: float | None = None, flip: bool = True,
                     jitter: bool | None = None, normalize: bool = True,
                     ignore_index: int = 255, seed: int | None = None) -> Compose:
    """Training preset for ``task``.

    - ``seg``: RandomScale (0.5-2, optional DANet ``base_size``) -> RandomCrop (pad ignore) ->
      flip -> [jitter] -> Normalize -> ToTensor (bidense-method.md §11).
    - ``depth``: RandomRotation (2.5 deg; bilinear image, nearest depth) -> RandomCrop (pad 0) ->
      flip -> PhotometricJitter (p 0.5) -> Normalize -> ToTensor (BTS). No scaling: it would
      change metric depth.
    - ``saliency``: RandomScale (0.75-1.25) -> RandomCrop (pad 0) -> flip -> jitter -> ...
    - ``road``: RandomScale (0.75-1.5) -> RandomCrop (pad ignore) -> flip -> jitter -> ...

    The per-task defaults (scale range, rotation, jitter and its brightness, padding fill) are
    the task's :class:`bidense.tasks.TaskSpec` fields; a task without a scale range ignores
    ``scale_range``, a task with a default rotation always rotates.
    """
    spec = tasks.get_task(task)
    fill = spec.fill_value(ignore_index)
    ts: list[JointTransform] = []
    if spec.scale_range is not None:
        ts.append(RandomScale(scale_range or spec.scale_range, base_size=base_size))
    degrees = spec.rotation if rotation is None else rotation
    if spec.rotation is not None or degrees:
        ts.append(RandomRotation(degrees, target_fill=fill))
    ts.append(RandomCrop(crop_size, image_fill=0.0, target_fill=fill))
    if flip:
        ts.append(RandomHorizontalFlip(0.5))
    if spec.jitter if jitter is None else jitter:
        ts.append(PhotometricJitter(0.5, brightness=spec.brightness))
    if normalize:
        ts.append(Normalize())
    ts.append(ToTensor(task))
    return Compose(ts, seed=seed)


def eval_transforms(task: str, size: int | Sequence[int] | None = None,
                    normalize: bool = True) -> Compose:
    """Evaluation preset: optional :class:`Resize` (``size``), Normalize, ToTensor.

    Segmentation and depth are normally evaluated at native resolution (``size=None``); SOD
    commonly resizes to 352x352.
    """
    tasks.get_task(task)
    ts: list[JointTransform] = []
    if size is not None:
        ts.append(Resize(size))
    if normalize:
        ts.append(Normalize())
    ts.append(ToTensor(task))
    return Compose(ts)

