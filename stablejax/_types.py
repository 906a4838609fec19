"""Array type aliases used in public signatures (shapes are written in the docstrings)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import jax
import numpy as np

Array = jax.Array
ArrayLike = jax.Array | np.ndarray
PyTree = Any
Params = PyTree


class EnergyFn(Protocol):
    """The one energy protocol of stablejax: ``energy_fn(params, R, **kwargs) -> scalar`` in eV.

    ``R`` is [n_atoms, 3] in Angstrom; ``kwargs`` carries e.g. ``neighbor=`` for periodic
    systems. Forces are ``-jax.grad(energy_fn, argnums=1)``.
    """

    def __call__(self, params: Params, R: Array, **kwargs: Any) -> Array: ...


#: A progress callback: ``callback(done, total, info_dict)``. Library loops call it; the CLI
#: turns it into a progress bar.
ProgressFn = Callable[[int, int, dict], None]


class CriterionResult(NamedTuple):
    """Outcome of a stability criterion on a frame (or window of frames).

    Attributes:
      unstable: [] bool.
      value: [] float, the metric compared with the threshold (Angstrom for the bond and
        distance criteria, the RDF error for the RDF criterion).
    """

    unstable: Array
    value: Array


#: A stability criterion: ``criterion(R [n_atoms, 3]) -> CriterionResult(unstable, value)``;
#: the simulator also accepts a plain ``(unstable, value)`` pair. Factories are in
#: ``stablejax.stability``; the simulator (``stablejax.simulate``) runs it at every dump.
Criterion = Callable[[Array], CriterionResult]
