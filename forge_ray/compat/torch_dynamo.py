"""``torch._dynamo`` settings used when decoder layers are compiled one by one."""

from __future__ import annotations

CHECKED = {"torch": "2.13"}


def allow_recompiles(at_least: int) -> None:
    """Room for ``at_least`` compiled variants of one function: each decoder layer is one more
    (its layer index is a constant in the graph), and past the limit dynamo silently runs the
    later layers eagerly."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, at_least)
