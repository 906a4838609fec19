"""A trained model as a JAX-MD energy function: ``load_model(run_dir) -> LoadedModel``.

A run directory of ``pretrain`` (``model.json`` + ``best/``) or ``train`` (``model.json`` +
``final/``) holds everything needed to rebuild the potential. :func:`load_model` reads it and
binds the parameters, giving ``energy_fn(R) -> eV``, a drop-in for ``jax_md.simulate`` with
``jax_md.space.free()`` (molecules) or the model's own ``shift_fn`` and ``neighbor_fn``
(periodic boxes). :func:`bind_model` does the same for a spec (or model) and parameters in
memory. :class:`stablejax.calculator.Calculator` is the ASE face of the same binding.

Atom order: a molecule's model is bound to its atom list. Positions of the same molecule listed
in another order are refused unless ``atom_order="by_species"``: the input is then mapped onto
the model's order by a stable sort by species (the energy of SchNet and NequIP depends on the
atoms only through their species), and forces come back in the input's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses

from stablejax._types import Array, Params
from stablejax.errors import InputError
from stablejax.models import Model
from stablejax.train.model_spec import ModelSpec

ATOM_ORDERS = ("strict", "by_species")
_BY_SPECIES_HINT = "reorder the atoms, or pass atom_order='by_species' to map them by element"


class LoadedModel(NamedTuple):
    """A potential with its parameters bound, for one system (atoms in ``atomic_numbers`` order).

    Attributes:
      energy_fn: ``energy_fn(R, **kwargs) -> []`` total energy, eV; R [n_atoms, 3] Angstrom in
        the order of ``atomic_numbers``. Jittable and differentiable: forces are
        ``-jax.grad(energy_fn)(R)``. Periodic models need ``neighbor=nbrs`` (see
        ``neighbor_fn``). Computed in the dtype of ``R`` (use ``dtype``).
      energy_fn_of_params: ``(params, R, **kwargs) -> []`` eV, the same with the parameters as
        an argument (for gradients with respect to them).
      per_atom_energy_fn: ``(R, **kwargs) -> [n_atoms]`` eV, in the order of R; None when the
        model has no per-atom form.
      per_atom_energy_fn_of_params: ``(params, R, **kwargs) -> [n_atoms]`` eV, or None.
      atomic_numbers: [n_atoms] int numpy, the atoms ``energy_fn`` takes, in order.
      masses: [n_atoms] float64 numpy, amu (the standard atomic masses of ``atomic_numbers``).
      species: the atomic numbers the model knows (its embedding rows); None for a bare Model.
      dtype: the model's parameter dtype; pass positions in it.
      displacement_fn: JAX-MD displacement function of the model's space.
      shift_fn: JAX-MD shift function of the model's space (``space.free()``'s for molecules).
      neighbor_fn: JAX-MD neighbour-list functions (periodic models), else None.
      permutation: [n_atoms] int numpy mapping the input order to the model's (``R[perm]``), or
        None when the input is in the model's order.
      spec: the model's :class:`~stablejax.train.model_spec.ModelSpec` (None for a bare Model).
      model: the underlying :class:`~stablejax.models.Model` (atoms in the model's order).
      params: the parameters.
    """

    energy_fn: Callable[..., Array]
    energy_fn_of_params: Callable[..., Array]
    per_atom_energy_fn: Callable[..., Array] | None
    per_atom_energy_fn_of_params: Callable[..., Array] | None
    atomic_numbers: np.ndarray
    masses: np.ndarray
    species: tuple[int, ...] | None
    dtype: Any
    displacement_fn: Callable[..., Array]
    shift_fn: Callable[..., Array]
    neighbor_fn: Any
    permutation: np.ndarray | None
    spec: ModelSpec | None
    model: Model
    params: Params

    @property
    def periodic(self) -> bool:
        return self.neighbor_fn is not None


def load_model(run_dir: str | Path, *, atomic_numbers: Any = None, atom_order: str = "strict",
               box: Any = None) -> LoadedModel:
    """The model of a run directory with its parameters bound, as a JAX-MD energy function.

    Args:
      run_dir: a ``pretrain`` or ``train`` run directory (``model.json`` and ``best/`` or
        ``final/`` parameters; ``final/`` wins).
      atomic_numbers: [n_atoms] int, the atoms the positions will list; default: the model's.
      atom_order: ``"strict"`` (the atoms must be the model's, in its order) or
        ``"by_species"`` (a molecule listed in another order is mapped onto the model's).
      box: periodic models only: the box to simulate in (JAX-MD convention, Angstrom);
        default: the model's.

    Returns:
      A :class:`LoadedModel`.

    Raises:
      FileNotFoundError: no ``model.json`` or no parameters in ``run_dir``.
      InputError: see :func:`bind_model`.

    Examples:
      NVT Langevin dynamics of a molecule with JAX-MD (``R0``: [n_atoms, 3] Angstrom)::

        import jax, jax.numpy as jnp
        from jax_md import simulate, space
        import stablejax
        from stablejax.units import FS, kT_ev

        m = stablejax.load_model("runs/aspirin")
        _, shift_fn = space.free()
        init_fn, step_fn = simulate.nvt_langevin(m.energy_fn, shift_fn, dt=0.5 * FS,
                                                 kT=kT_ev(300.0), gamma=1e-3 / FS)  # 1/ps
        state = init_fn(jax.random.PRNGKey(0), jnp.asarray(R0, m.dtype), mass=m.masses)
        state = jax.lax.fori_loop(0, 1000, lambda i, s: step_fn(s), state)  # 0.5 ps
        energy = m.energy_fn(state.position)
    """
    from stablejax.pipeline import load_model_dir

    spec, _, params = load_model_dir(Path(run_dir).resolve())  # orbax needs absolute paths
    return bind_model(spec, params, atomic_numbers=atomic_numbers, atom_order=atom_order,
                      box=box, what=f"{run_dir}: atomic_numbers")


def bind_model(source: ModelSpec | Model, params: Params, *, atomic_numbers: Any = None,
               atom_order: str = "strict", box: Any = None,
               what: str = "atomic_numbers") -> LoadedModel:
    """Bind parameters to a model given by its spec (or a bare :class:`Model`).

    Args:
      source: a :class:`ModelSpec`, or a :class:`~stablejax.models.Model` (then
        ``atomic_numbers`` is required, is taken as the model's own atoms, and only
        ``atom_order="strict"`` is possible: a bare model may depend on atom indices).
      params: the model's parameters.
      atomic_numbers: [n_atoms] int, the atoms the positions will list; default: the spec's.
      atom_order: ``"strict"`` or ``"by_species"`` (see :func:`load_model`).
      box: periodic specs only: another box (JAX-MD convention, Angstrom).
      what: the name of ``atomic_numbers`` in messages.

    Returns:
      A :class:`LoadedModel`.

    Raises:
      InputError: an unknown ``atom_order``; atoms that differ from a molecule model's (the
        first differing index and both elements named; with ``"by_species"``, another
        composition); elements a periodic model does not know; ``box`` for a molecule model.
    """
    if atom_order not in ATOM_ORDERS:
        raise InputError(f"atom_order must be one of {ATOM_ORDERS}, got {atom_order!r}")
    if isinstance(source, Model):
        return _bind_bare(source, params, atomic_numbers, atom_order, box)
    if not isinstance(source, ModelSpec):
        raise InputError(f"bind_model needs a ModelSpec or a Model, got {type(source).__name__}")
    spec = source
    z = _atomic_numbers(spec.atomic_numbers if atomic_numbers is None else atomic_numbers, what)
    perm = None
    if spec.box is not None:  # a periodic model takes any atoms of its elements, in any order
        spec.check_species(z, what)
        if box is not None or not np.array_equal(z, spec.atomic_numbers):
            spec = spec.for_system(z, spec.box if box is None else box)
    else:
        if box is not None:
            raise InputError("box is for periodic models; this model is for a free molecule")
        if atom_order == "by_species":
            perm = spec.atom_permutation(z, what)
            if np.array_equal(perm, np.arange(perm.size)):
                perm = None
        else:
            spec.check_species(z, what, hint=_BY_SPECIES_HINT)
    dtype = jnp.dtype(spec.model_config.param_dtype)
    return _bound(spec.build(), params, z, perm, spec.species, dtype, spec)


def _bind_bare(model: Model, params: Params, atomic_numbers: Any, atom_order: str,
               box: Any) -> LoadedModel:
    if atomic_numbers is None:
        raise InputError("a bare Model needs atomic_numbers (its atoms, in order)")
    if atom_order != "strict":
        raise InputError("atom_order='by_species' needs the model's ModelSpec: a bare Model may "
                         "depend on atom indices")
    if box is not None:
        raise InputError("box needs the model's ModelSpec: a bare Model's box is fixed")
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    dtype = leaves[0].dtype if leaves else jnp.dtype(jnp.float32)
    z = _atomic_numbers(atomic_numbers, "atomic_numbers")
    return _bound(model, params, z, None, None, jnp.dtype(dtype), None)


def _atomic_numbers(value: Any, what: str) -> np.ndarray:
    z = np.asarray(value)
    if (z.ndim != 1 or z.size == 0 or not np.issubdtype(z.dtype, np.integer)
            or not np.all((z >= 1) & (z < len(atomic_masses)))):
        raise InputError(f"{what} must be a non-empty 1-D array of atomic numbers, got "
                         f"{np.asarray(value).tolist()!r:.80}")
    return z.astype(int)


def _bound(model: Model, params: Params, z: np.ndarray, perm: np.ndarray | None,
           species: tuple[int, ...] | None, dtype: Any, spec: ModelSpec | None) -> LoadedModel:
    """The :class:`LoadedModel` of ``model`` for inputs whose atoms are ``z`` (``perm``:
    input order -> model order, or None)."""
    if perm is None:
        energy_fn_of_params = model.energy_fn
        per_atom_of_params = model.per_atom_energy_fn
    else:
        inverse = np.argsort(perm)

        def energy_fn_of_params(p: Params, R: Array, **kwargs: Any) -> Array:
            return model.energy_fn(p, R[perm], **kwargs)

        per_atom_of_params = None
        if model.per_atom_energy_fn is not None:
            def per_atom_of_params(p: Params, R: Array, **kwargs: Any) -> Array:
                return model.per_atom_energy_fn(p, R[perm], **kwargs)[inverse]

    def energy_fn(R: Array, **kwargs: Any) -> Array:
        return energy_fn_of_params(params, R, **kwargs)

    per_atom_energy_fn = None
    if per_atom_of_params is not None:
        def per_atom_energy_fn(R: Array, **kwargs: Any) -> Array:
            return per_atom_of_params(params, R, **kwargs)

    return LoadedModel(
        energy_fn=energy_fn, energy_fn_of_params=energy_fn_of_params,
        per_atom_energy_fn=per_atom_energy_fn,
        per_atom_energy_fn_of_params=per_atom_of_params, atomic_numbers=z,
        masses=np.asarray(atomic_masses[z], dtype=np.float64), species=species, dtype=dtype,
        displacement_fn=model.displacement_fn, shift_fn=model.shift_fn,
        neighbor_fn=model.neighbor_fn, permutation=perm, spec=spec, model=model, params=params)

