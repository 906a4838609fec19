"""A :class:`ReplicaState` as named host arrays and back, exactly (for checkpoints).

``state_to_arrays`` flattens a state into ``{"000": leaf, "001": leaf, ...}`` (``jax.tree``
leaf order) plus the neighbour lists' static sizes; ``state_from_arrays`` rebuilds the state on
the tree structure of a freshly initialised one (same simulator, same number of replicas). Every
leaf comes back with its dtype and bits, so a simulation continued from a restored state equals
the uninterrupted one bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stablejax.simulate.state import ReplicaState


def state_to_arrays(state: ReplicaState) -> tuple[dict[str, np.ndarray], dict]:
    """Host copies of every leaf of ``state`` and its static neighbour-list sizes.

    Returns:
      (arrays, static): ``arrays`` maps ``"%03d" % i`` to the i-th leaf (``jax.tree.leaves``
      order); ``static`` is ``{}`` in free space, else the lists' ``max_occupancy`` and
      ``cell_list_capacity`` (JSON-able), which a reallocation may have changed.
    """
    arrays = {f"{i:03d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state))}
    static = {}
    if state.neighbor is not None:
        cap = state.neighbor.cell_list_capacity
        static = {"max_occupancy": int(state.neighbor.max_occupancy),
                  "cell_list_capacity": None if cap is None else int(cap)}
    return arrays, static


def state_from_arrays(template: ReplicaState, arrays: dict, static: dict) -> ReplicaState:
    """The state saved by :func:`state_to_arrays`, on the structure of ``template``.

    Args:
      template: a state of the same simulator and replica count (e.g. ``Simulator.init``'s).
      arrays, static: what :func:`state_to_arrays` returned.

    Raises:
      ValueError: the arrays do not fit the template (another simulator or replica count).
    """
    if template.neighbor is not None and static:
        template = template.replace(neighbor=template.neighbor.set(
            max_occupancy=static["max_occupancy"],
            cell_list_capacity=static["cell_list_capacity"]))
    leaves, treedef = jax.tree.flatten(template)
    resized = {id(x) for x in jax.tree.leaves(template.neighbor)}  # capacity may differ
    if len(arrays) != len(leaves):
        raise ValueError(f"saved state has {len(arrays)} arrays, this simulator's {len(leaves)}")
    out = []
    for i, ref in enumerate(leaves):
        a = np.asarray(arrays[f"{i:03d}"])
        ref_shape = np.shape(ref)
        if a.dtype != ref.dtype or (a.shape != ref_shape and id(ref) not in resized):
            raise ValueError(f"saved state array {i} is {a.dtype}{list(a.shape)}, this "
                             f"simulator's {ref.dtype}{list(ref_shape)}")
        out.append(jnp.asarray(a))
    return jax.tree.unflatten(treedef, out)
