"""GemNet-T parameters by layer group, and how a parameter update splits over the groups.

Used to check that StABlE's localized gradient reaches the whole network
(``benchmarks/bench_update_shares.py``, ``tests/test_update_shares.py``): an SGD update is a
multiple of the (clipped) gradient, so its share per group is the gradient's.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from stablejax._types import PyTree

#: Group names in reporting order (``interaction_<t>`` has one group per interaction block).
GROUPS = ("output_kernels", "scale_factors", "output_blocks", "interaction_*", "embeddings",
          "bases")


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def parameter_group(path: tuple[str, ...]) -> str:
    """The layer group of the GemNet-T parameter at key path ``path`` (e.g. ``('params',
    'output_1', 'out_energy')``):

    * ``output_kernels``: the last layer of each output block (``out_energy``);
    * ``scale_factors``: the scalar scale factors (``scale_*``);
    * ``output_blocks``: the other layers of the output blocks;
    * ``interaction_<t>``: the other layers of interaction block t;
    * ``embeddings``: the atom and edge embeddings;
    * ``bases``: the radial frequencies and the shared projections of the bases.
    """
    names = [n for n in path if n != "params"]
    if names[-1] == "out_energy":
        return "output_kernels"
    if names[-1].startswith("scale_"):
        return "scale_factors"
    if names[0].startswith("output_"):
        return "output_blocks"
    if names[0].startswith("interaction_"):
        return names[0]
    if names[0] in ("atom_embedding", "edge_embedding"):
        return "embeddings"
    return "bases"


def group_sq_norms(tree: PyTree, group_fn: Callable[[tuple[str, ...]], str] = parameter_group
                   ) -> dict[str, float]:
    """{group: sum of squares of ``tree``'s leaves in the group} (float64 on the host)."""
    out: dict[str, float] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        g = group_fn(_names(path))
        out[g] = out.get(g, 0.0) + float(np.sum(np.square(np.asarray(leaf, np.float64))))
    return out


def update_shares(update: PyTree, group_fn: Callable[[tuple[str, ...]], str] = parameter_group
                  ) -> dict[str, float]:
    """{group: fraction of the update's squared norm in the group}; the fractions sum to 1.

    Raises:
      ValueError: a zero or non-finite update (no shares to speak of).
    """
    sq = group_sq_norms(update, group_fn)
    total = sum(sq.values())
    if not (np.isfinite(total) and total > 0):
        raise ValueError(f"the update's squared norm is {total}: shares need a finite, non-zero "
                         "update")
    return {g: v / total for g, v in sq.items()}


def relative_changes(update: PyTree, params: PyTree,
                     group_fn: Callable[[tuple[str, ...]], str] = parameter_group
                     ) -> dict[str, float]:
    """{group: ||update_g|| / ||params_g||} (inf for a group whose parameters are all zero)."""
    du, p = group_sq_norms(update, group_fn), group_sq_norms(params, group_fn)
    return {g: (float(np.sqrt(du[g] / p[g])) if p[g] > 0 else float("inf")) for g in du}
