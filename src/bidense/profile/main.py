"""Entry point the CLI calls: ``bidense summary MODEL --method M --task T --input BxCxHxW``."""

from __future__ import annotations

from collections.abc import Sequence

from bidense.models import create_model

from .summary import Summary, parse_input_shape, summarize

__all__ = ["summary_main", "summarize_zoo_model"]


def summarize_zoo_model(model_name: str, method: str, task: str,
                        input_shape: str | Sequence[int], num_classes: int | None = None,
                        paper_compat: bool = False) -> Summary:
    """Build ``model_name`` with ``method`` and the same architecture in fp32, and summarize both.

    For ``method="fp32"`` the model is its own fp32 reference (all ratios are 1).
    """
    shape = parse_input_shape(input_shape)
    model = create_model(model_name, task=task, num_classes=num_classes, method=method)
    fp32 = model if method == "fp32" else create_model(
        model_name, task=task, num_classes=num_classes, method="fp32")
    return summarize(model, shape, paper_compat=paper_compat, fp32_model=fp32,
                     model_name=f"{model_name} [{method}, {task}]")


def summary_main(model_name: str, method: str, task: str, input_shape: str | Sequence[int],
                 num_classes: int | None = None, as_json: bool = False,
                 paper_compat: bool = False) -> str:
    """Return the efficiency report of a zoo model as a text table, or as JSON with ``as_json``.

    The JSON object holds at least ``total_params, binary_params, fp_params, bits, bops, flops,
    ops, layers`` and ``fp32`` (the same keys for the full-precision model of the same
    architecture).
    """
    summary = summarize_zoo_model(model_name, method, task, input_shape,
                                  num_classes=num_classes, paper_compat=paper_compat)
    return summary.to_json() if as_json else summary.table()
