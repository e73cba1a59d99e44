"""Named recipes: a ``recipe:`` in an RL spec expands to the settings its paper uses, for every
key the spec does not set itself; the expanded settings are what the run records in its
``spec.yaml``, so a run says exactly what it trained with.

=========  ===================================  ==============================================
recipe     paper                                settings
=========  ===================================  ==============================================
dapo       DAPO, arXiv 2503.14476               clip-higher (0.2 / 0.28), token-mean loss,
                                                dynamic sampling, soft overlong penalty over
                                                the last quarter of ``max_new_tokens``, no KL
dr_grpo    Dr. GRPO, arXiv 2503.20783           group advantages not divided by their std,
                                                token sums over a constant length
gspo       GSPO, arXiv 2507.18071               sequence-level ratio, clip 3e-4 / 4e-4,
                                                sequence-mean loss
=========  ===================================  ==============================================
"""

from __future__ import annotations

from typing import Any


def _dapo(raw: dict) -> dict[str, Any]:
    max_new = int((raw.get("rollout") or {}).get("max_new_tokens", 32))
    return {"clip_eps": 0.2, "clip_eps_high": 0.28, "loss_aggregation": "token-mean", "kl_coef": 0.0,
            "dynamic_sampling.enabled": True, "overlong.buffer": max(1, max_new // 4), "overlong.penalty": 1.0}


def _dr_grpo(raw: dict) -> dict[str, Any]:
    return {"std_normalize": False, "loss_aggregation": "seq-mean-token-sum-norm"}


def _gspo(raw: dict) -> dict[str, Any]:
    return {"policy_loss": "gspo", "clip_eps": 3e-4, "clip_eps_high": 4e-4, "loss_aggregation": "seq-mean-token-mean"}


RECIPES = {"dapo": _dapo, "dr_grpo": _dr_grpo, "gspo": _gspo}


def expand(raw: dict) -> dict:
    """``raw`` (an RL stage's mapping) with its recipe's settings filled in wherever the spec
    leaves them unset; unchanged without a recipe (an unknown name is the loader's to report)."""
    name = raw.get("recipe")
    if name not in RECIPES:
        return raw
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted, value in RECIPES[name](raw).items():
        *parents, key = dotted.split(".")
        node = out
        for p in parents:
            if not isinstance(node.get(p, {}), dict):
                break
            node = node.setdefault(p, {})
        else:
            node.setdefault(key, value)
    return out
