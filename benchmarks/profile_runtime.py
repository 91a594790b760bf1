"""Where the packed runtime's time goes for one model: time per kind of work, per thread count.

    python benchmarks/profile_runtime.py upernet_convnext_atto bidense:shared --size 256 \
        --threads 1,2 --json profile.json

``METHOD`` as in ``bidense.benchmark.models.MODEL_CASES`` (``bidense:shared`` / ``bidense:group``
set the DAB scale). Prints the share of packed convs, float convs, the DAB float path, CFB,
norms/activations, pooling/resize/concat, other functions and framework overhead (the table of
``bidense.benchmark.breakdown``), then the slowest nodes; writes the JSON with the per-node
report of the median call.
"""

from __future__ import annotations

import argparse

from bidense.benchmark.common import write_json
from bidense.benchmark.models import format_profile, profile_model_runtime


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, profile the model, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a registered model name, e.g. upernet_resnet18")
    p.add_argument("method", help="binarization method, e.g. reactnet or bidense:shared")
    p.add_argument("--size", type=int, default=256, help="input height = width")
    p.add_argument("--threads", default="1", help="thread counts, comma separated")
    p.add_argument("--repeats", type=int, default=10, help="minimum timed runs")
    p.add_argument("--min-time", type=float, default=2.0, help="minimum seconds per run")
    p.add_argument("--top", type=int, default=10, help="slowest nodes to list")
    p.add_argument("--json", default="runtime_profile.json", help="output JSON ('' = none)")
    a = p.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    prof = profile_model_runtime(a.model, a.method, a.size, threads, a.repeats, a.min_time)
    print(format_profile(prof, a.top))
    if a.json:
        write_json(a.json, prof)
    return prof


if __name__ == "__main__":
    main()
