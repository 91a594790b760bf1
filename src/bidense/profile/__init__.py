"""bidense.profile: the efficiency report of binary dense-prediction models.

- :func:`summarize` (model, input shape) -> :class:`Summary`: per-layer weight/activation bits,
  1-bit and 32-bit parameters, memory, binary MACs (BOPs), FP MACs (FLOPs),
  OPs = BOPs/64 + FLOPs and a separate elementwise column; totals and the binary share of MACs;
  an fp32 model side by side with the ratios; ``paper_compat=True`` for the BiDense reference's
  counting conventions.
- :func:`summary_main`: what ``bidense summary`` prints (table or JSON) for a zoo model.
- :func:`module_ops` (layer, input shape): closed-form counts of the ``ding`` layers of
  :mod:`bidense.nn` (:data:`MODULE_OPS`); :func:`full_precision_attention_ops`,
  :func:`binary_attention_sa_ops`, :func:`attention_cost_comparison`: the attention SA-OPs
  comparison (ding2024.md D2).

Counting rules: :mod:`bidense.profile.rules`, :mod:`bidense.profile.modules` and
docs/efficiency.md.
"""

from .main import summarize_zoo_model, summary_main
from .modules import (
    MODULE_OPS,
    SELF_REPORTED_OPS,
    attention_cost_comparison,
    binary_attention_sa_ops,
    full_precision_attention_ops,
    module_ops,
    self_reported_counter,
)
from .rules import conv_macs, elementwise_count, mac_count, one_magnitude
from .summary import TOTAL_KEYS, Summary, is_binary_layer, parse_input_shape, summarize

__all__ = [
    "MODULE_OPS",
    "SELF_REPORTED_OPS",
    "TOTAL_KEYS",
    "Summary",
    "attention_cost_comparison",
    "binary_attention_sa_ops",
    "conv_macs",
    "elementwise_count",
    "full_precision_attention_ops",
    "is_binary_layer",
    "mac_count",
    "module_ops",
    "one_magnitude",
    "parse_input_shape",
    "self_reported_counter",
    "summarize",
    "summarize_zoo_model",
    "summary_main",
]
