"""Shared machinery for the streaming metrics: tensor state, reset, merge and all-reduce.

Every metric keeps its whole state as a few CPU tensors (float64 sums or int64 counts) that are
*additive* over images. That one property gives three things for free: ``merge`` (add another
metric's state), ``all_reduce`` (one ``torch.distributed.all_reduce(SUM)`` per tensor) and
checkpointable ``state_dict``s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["Metric", "as_tensor", "split_batch"]


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """Convert a torch tensor or numpy array (or nested list) to a torch tensor.

    Numpy arrays are made contiguous first (flipped views have negative strides torch cannot
    wrap) and unsigned types wider than 8 bits are widened, because torch supports them poorly.
    """
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - defensive
            raise TypeError(
                f"{name}: expected a torch tensor or numpy array, got {type(x)}"
            ) from exc
    if arr.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, got dtype object")
    if arr.dtype in (np.uint16, np.uint32, np.uint64):
        arr = arr.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(arr))


def split_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """Bring a map to (B, H, W): accepts (H, W), (B, H, W) or (B, 1, H, W)."""
    if x.ndim == 2:
        return x.unsqueeze(0)
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(
        f"{name}: expected shape (H, W), (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}"
    )


class Metric:
    """Base class: additive tensor state with ``update``/``compute``/``reset``/``all_reduce``.

    Subclasses register their state in ``__init__`` with :meth:`_add_state` and implement
    :meth:`update` and :meth:`compute`. State lives on the CPU in float64 or int64 so sums over a
    whole split stay exact (counts) or accurate (sums of per-image scores).

    Distributed use: every rank updates with its own shard, then calls :meth:`all_reduce`
    (alias :meth:`sync`) once, then :meth:`compute`. After a sync the state holds the global sums;
    further ``update`` calls are refused until :meth:`reset`, because a second sync would count
    the other ranks' images twice.
    """

    def __init__(self) -> None:
        self._defaults: dict[str, torch.Tensor] = {}
        self._state: dict[str, torch.Tensor] = {}
        self._synced = False

    # ----------------------------------------------------------------- state management
    def _add_state(self, name: str, default: torch.Tensor) -> None:
        if default.dtype not in (torch.float64, torch.int64):
            raise TypeError(f"state {name!r} must be float64 or int64, got {default.dtype}")
        self._defaults[name] = default.detach().cpu().clone()
        self._state[name] = default.detach().cpu().clone()

    def _add_to(self, name: str, value: torch.Tensor) -> None:
        if self._synced:
            raise RuntimeError(
                f"{type(self).__name__}: update() after all_reduce(); call reset() first"
            )
        state = self._state[name]
        state += value.detach().to(device=state.device, dtype=state.dtype)

    def reset(self) -> None:
        """Clear the accumulated state (back to zero images seen)."""
        for name, default in self._defaults.items():
            self._state[name] = default.clone()
        self._synced = False

    def _config(self) -> dict[str, Any]:
        """Constructor settings that must agree for two states to be merged."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copy of the state tensors (for checkpointing or manual gathering)."""
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the state with ``state`` (as produced by :meth:`state_dict`)."""
        if set(state) != set(self._state):
            raise ValueError(
                f"{type(self).__name__}: state keys {sorted(state)} != {sorted(self._state)}"
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(self._state[k].shape):
                raise ValueError(
                    f"{type(self).__name__}: state {k!r} has shape {tuple(v.shape)}, "
                    f"expected {tuple(self._state[k].shape)}"
                )
            self._state[k] = v.detach().cpu().to(self._state[k].dtype).clone()

    def merge(self, other: Metric) -> Metric:
        """Add ``other``'s state into this one (what ``all_reduce`` does across ranks).

        Returns ``self`` so merges can be chained.
        """
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        if other._config() != self._config():
            raise ValueError(
                f"{type(self).__name__}: cannot merge metrics with different settings "
                f"{other._config()} vs {self._config()}"
            )
        for k in self._state:
            self._state[k] = self._state[k] + other._state[k]
        return self

    def all_reduce(self) -> None:
        """Sum the state over all ``torch.distributed`` ranks (no-op when not initialised).

        One ``all_reduce(SUM)`` per state tensor. NCCL only reduces CUDA tensors, so under that
        backend the tensors take a round trip through the current CUDA device. Calling it twice
        without a :meth:`reset` in between does nothing the second time.
        """
        if self._synced:
            return
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        for k, v in self._state.items():
            buf = v.to(device)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            self._state[k] = buf.cpu()
        self._synced = True

    def sync(self) -> None:
        """Alias of :meth:`all_reduce`."""
        self.all_reduce()

    # ----------------------------------------------------------------- interface
    def update(self, pred: Any, target: Any) -> None:  # pragma: no cover - abstract
        """Accumulate one batch (or one image)."""
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """Return the metric values for everything seen since the last reset."""
        raise NotImplementedError

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({cfg})"
