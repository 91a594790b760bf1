"""Training losses for the dense-prediction tasks (torch only).

* :class:`SegmentationLoss` - cross-entropy with an ignore index.
* :class:`SILogLoss` - scale-invariant log loss (Eigen et al. 2014; BTS variant, Lee et al. 2019).
* :class:`SaliencyLoss` - BCE + soft IoU (BASNet, Qin et al. 2019; F3Net, Wei et al. 2020).
* :class:`RoadLoss` - BCE with "don't care" pixels masked.
* :class:`DistillationLoss` - KL from a teacher's softmax (ReActNet, Liu et al. 2020).
* :func:`build_loss` - construct one of these by name (:data:`LOSSES`; the name a task's
  :class:`bidense.tasks.TaskSpec` gives, or the task's own name).

Every loss returns a scalar that stays differentiable (zero, not NaN) when a batch has no valid
pixel, so a fully ignored crop cannot poison the optimiser state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DistillationLoss",
    "RoadLoss",
    "SILogLoss",
    "SaliencyLoss",
    "LOSSES",
    "SegmentationLoss",
    "build_loss",
]


def _map_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """(B, H, W) view of a (B, H, W) or (B, 1, H, W) map."""
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 3:
        return x
    raise ValueError(f"{name}: expected shape (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")


def _check_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: prediction shape {tuple(a.shape)} != target {tuple(b.shape)}")


def _f32(x: torch.Tensor) -> torch.Tensor:
    # Under autocast the model emits fp16/bf16; logs, sums and sqrt of whole maps need fp32.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _zero(x: torch.Tensor) -> torch.Tensor:
    # Keeps the graph connected so backward() works and yields zero gradients.
    return x.sum() * 0.0


class SegmentationLoss(nn.Module):
    """Pixel-wise cross-entropy over K logits, pixels with ``ignore_index`` excluded::

        L = sum_{i in V} w_{y_i} (-log softmax(z_i)_{y_i}) / sum_{i in V} w_{y_i}

    over the set V of non-ignored pixels (``torch.nn.functional.cross_entropy``, mean
    reduction; w = 1 without ``weight``). Logits (B, K, H, W), target (B, H, W) or
    (B, 1, H, W) integer labels. The BiDense reference's class weight 0 on an ignore slot
    equals ``ignore_index = K - 1`` (bidense-method.md §12).
    """

    def __init__(
        self,
        ignore_index: int = 255,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight).float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean loss over non-ignored pixels (0 if there are none)."""
        if logits.ndim != 4:
            raise ValueError(f"logits: expected (B, K, H, W), got {tuple(logits.shape)}")
        t = _map_batch(target, "target").long()
        if t.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
            )
        valid = t != self.ignore_index
        if not bool(valid.any()):
            return _zero(logits)
        k = logits.shape[1]
        bad = valid & ((t < 0) | (t >= k))
        if bool(bad.any()):
            raise ValueError(
                f"target: label {int(t[bad][0])} outside [0, {k}) and not ignore_index "
                f"{self.ignore_index}"
            )
        return F.cross_entropy(
            logits,
            t,
            weight=None if self.weight is None else self.weight.to(logits),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class SILogLoss(nn.Module):
    """Scale-invariant log loss (Eigen et al., NeurIPS 2014; the BTS form, Lee et al. 2019)::

        d = ln(pred + eps) - ln(gt + eps)      over the valid pixels of the whole batch
        L = scale * sqrt(mean(d^2) - lambd * mean(d)^2)

    with ``lambd = 0.85``, ``scale = 10``, ``eps = 1e-7`` and valid = ``gt > min_depth`` (and
    ``gt < max_depth`` when given); bidense-method.md §12. The reference uses ``min_depth = 0.1``
    for NYU and ``1.0`` for KITTI; the default here, 1e-3, only drops the 0 = "no depth" pixels.
    The radicand is clamped at 1e-12 so a perfect prediction gives a finite (zero) gradient.
    """

    def __init__(
        self,
        lambd: float = 0.85,
        scale: float = 10.0,
        min_depth: float = 1e-3,
        max_depth: float | None = None,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if not 0.0 <= lambd <= 1.0:
            raise ValueError(f"lambd must lie in [0, 1] (else the radicand can go negative), "
                             f"got {lambd}")
        self.lambd = float(lambd)
        self.scale = float(scale)
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target: (B, H, W) or (B, 1, H, W) depth in metres (pred > 0)."""
        p = _f32(_map_batch(pred, "pred"))
        g = _map_batch(target, "target")
        _check_same(p, g, "SILogLoss")
        valid = torch.isfinite(g) & (g > self.min_depth)
        if self.max_depth is not None:
            valid &= g < self.max_depth
        if not bool(valid.any()):
            return _zero(pred)
        d = torch.log(p[valid] + self.eps) - torch.log(g[valid].to(p.dtype) + self.eps)
        radicand = (d**2).mean() - self.lambd * d.mean() ** 2
        return self.scale * torch.sqrt(radicand.clamp_min(1e-12))


class SaliencyLoss(nn.Module):
    """BCE + soft IoU on a one-channel saliency output (BASNet, Qin et al. CVPR 2019)::

        BCE = mean_i [-g_i log s_i - (1 - g_i) log(1 - s_i)],   s = sigmoid(z)
        IoU = mean_b [1 - (sum s g + smooth) / (sum (s + g - s g) + smooth)]
        L   = bce_weight * BCE + iou_weight * IoU

    Inputs: logits (``from_logits=True``, the default; BCE uses the stable log-sum-exp form) or
    probabilities, (B, 1, H, W) or (B, H, W); targets in [0, 1] of the same shape.
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        iou_weight: float = 1.0,
        smooth: float = 1.0,
        from_logits: bool = True,
    ) -> None:
        super().__init__()
        self.bce_weight = float(bce_weight)
        self.iou_weight = float(iou_weight)
        self.smooth = float(smooth)
        self.from_logits = bool(from_logits)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the weighted sum of the batch-mean BCE and the image-mean soft IoU loss."""
        z = _f32(_map_batch(pred, "pred"))
        g = _map_batch(target, "target").to(z.dtype)
        _check_same(z, g, "SaliencyLoss")
        if self.from_logits:
            bce = F.binary_cross_entropy_with_logits(z, g)
            s = torch.sigmoid(z)
        else:
            bce = F.binary_cross_entropy(z, g)
            s = z
        inter = (s * g).flatten(1).sum(1)
        union = (s + g - s * g).flatten(1).sum(1)
        iou = 1.0 - (inter + self.smooth) / (union + self.smooth)
        return self.bce_weight * bce + self.iou_weight * iou.mean()


class RoadLoss(nn.Module):
    """Binary cross-entropy on road logits with "don't care" pixels masked::

        L = mean_{i: g_i != ignore} [-w_pos g_i log s_i - (1 - g_i) log(1 - s_i)],  s = sigmoid(z)

    Logits (B, 1, H, W) or (B, H, W); target of the same shape with 0, 1 or ``ignore_index``.
    ``pos_weight`` (w_pos, default 1) re-weights road pixels as in
    ``binary_cross_entropy_with_logits``.
    """

    def __init__(self, ignore_index: int = 255, pos_weight: float | None = None) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean BCE over valid pixels (0 if there are none)."""
        z = _f32(_map_batch(logits, "logits"))
        t = _map_batch(target, "target")
        _check_same(z, t, "RoadLoss")
        valid = t != self.ignore_index
        if not bool(valid.any()):
            return _zero(logits)
        tv = t[valid].to(z.dtype)
        if not bool(((tv == 0) | (tv == 1)).all()):
            raise ValueError(f"target: road labels must be 0, 1 or {self.ignore_index}")
        pw = None if self.pos_weight is None else torch.tensor(self.pos_weight, dtype=z.dtype,
                                                               device=z.device)
        return F.binary_cross_entropy_with_logits(z[valid], tv, pos_weight=pw)


class DistillationLoss(nn.Module):
    """Distributional loss of ReActNet (Liu et al., ECCV 2020), with an optional temperature::

        p^T = softmax(z_teacher / T),  p^S = softmax(z_student / T)   over the class dim (1)
        L   = T^2 * (1/n) sum_i sum_c p^T_c(i) * (log p^T_c(i) - log p^S_c(i))

    i.e. KL(p^T || p^S) averaged over the n = B (classification) or B*H*W (dense) positions;
    the teacher is detached. ReActNet uses T = 1, where the T^2 factor (Hinton et al. 2015,
    keeping gradient magnitudes comparable across temperatures) is 1. An optional boolean
    ``mask`` of shape (B, H, W) restricts the average to the True positions.

    One-channel outputs (saliency, road) are read as Bernoulli logits: p = sigmoid(z / T), i.e.
    the softmax of [0, z / T], and the KL is the binary one. For a regression output (depth)
    this loss has no meaning.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Student/teacher logits (B, K) or (B, K, H, W) of the same shape."""
        _check_same(student_logits, teacher_logits, "DistillationLoss")
        if student_logits.ndim < 2:
            raise ValueError("DistillationLoss: logits need a class dimension (dim 1)")
        t = self.temperature
        zs = _f32(student_logits)
        zt = teacher_logits.detach().to(zs.dtype)
        if zs.shape[1] == 1:
            # One logit z is a Bernoulli via sigmoid(z) = softmax([0, z])[1]; softmax over a
            # single channel would be constant 1 and the loss identically 0.
            zs = torch.cat([torch.zeros_like(zs), zs], dim=1)
            zt = torch.cat([torch.zeros_like(zt), zt], dim=1)
        log_ps = F.log_softmax(zs / t, dim=1)
        log_pt = F.log_softmax(zt / t, dim=1)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(1)
        if mask is not None:
            m = mask.to(torch.bool)
            if m.shape != kl.shape:
                raise ValueError(f"mask shape {tuple(m.shape)} != {tuple(kl.shape)}")
            if not bool(m.any()):
                return _zero(student_logits)
            kl = kl[m]
        return kl.mean() * t * t


#: loss registry: the names :attr:`bidense.tasks.TaskSpec.loss` gives, plus distillation
LOSSES: dict[str, type[nn.Module]] = {
    "seg": SegmentationLoss,
    "silog": SILogLoss,
    "saliency": SaliencyLoss,
    "road": RoadLoss,
    "distill": DistillationLoss,
}
#: other names accepted by :func:`build_loss` (task names and long forms)
_ALIASES = {"segmentation": "seg", "depth": "silog", "sod": "saliency",
            "distillation": "distill"}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Construct loss ``name`` (a :data:`LOSSES` key, or ``segmentation``, ``depth``, ``sod``,
    ``distillation``), passing ``kwargs`` on; a task's loss is ``build_loss(get_task(t).loss)``.
    """
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        raise ValueError(
            f"unknown loss {name!r}; choose from {sorted(set(LOSSES) | set(_ALIASES))}"
        )
    return LOSSES[key](**kwargs)
