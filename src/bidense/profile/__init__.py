"""bidense.profile: the efficiency report of binary dense-prediction models.

- :func:`summarize` (model, input shape) -> :class:`Summary`: per-layer weight/activation bits,
  1-bit and 32-bit parameters, memory, binary MACs (BOPs), FP MACs (FLOPs),
  OPs = BOPs/64 + FLOPs and a separate elementwise column; totals and the binary share of MACs;
  an fp32 model side by side with the ratios; ``paper_compat=True`` for the BiDense reference's
  counting conventions.
- :func:`summary_main`: what ``bidense summary`` prints (table or JSON) for a zoo model.

Counting rules: :mod:`bidense.profile.rules` and docs/efficiency.md.
"""

from .main import summarize_zoo_model, summary_main
from .rules import conv_macs, elementwise_count, mac_count, one_magnitude
from .summary import TOTAL_KEYS, Summary, is_binary_layer, parse_input_shape, summarize

__all__ = [
    "TOTAL_KEYS",
    "Summary",
    "conv_macs",
    "elementwise_count",
    "is_binary_layer",
    "mac_count",
    "one_magnitude",
    "parse_input_shape",
    "summarize",
    "summarize_zoo_model",
    "summary_main",
]
