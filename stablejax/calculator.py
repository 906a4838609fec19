"""An ASE calculator for a trained model: ``Calculator(run_dir)``.

Example (NVE molecular dynamics with ASE)::

    from ase import units
    from ase.io import read
    from ase.md.verlet import VelocityVerlet
    from stablejax import Calculator

    atoms = read("aspirin.xyz")
    atoms.calc = Calculator("runs/aspirin")
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(100)

The energy and forces (``-grad`` of the energy) are jit-compiled once per system and reused;
ASE's float64 positions are converted to the model's dtype and results come back as float64
numpy in eV and eV/Angstrom. The binding itself is :func:`stablejax.loading.bind_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import CalculationFailed, all_changes
from ase.calculators.calculator import Calculator as AseCalculator
from ase.data import chemical_symbols

from stablejax._types import Params
from stablejax.errors import InputError
from stablejax.loading import ATOM_ORDERS, LoadedModel, bind_model
from stablejax.models import Model
from stablejax.train.model_spec import ModelSpec


class Calculator(AseCalculator):
    """ASE calculator of a stablejax model (energy, free_energy, forces, per-atom energies).

    Args:
      run_dir: a ``pretrain`` or ``train`` run directory (``model.json`` + ``best/`` or
        ``final/``); or None with ``model`` and ``params``.
      model: a :class:`~stablejax.train.model_spec.ModelSpec`, or a bare molecular
        :class:`~stablejax.models.Model` (then ``atomic_numbers`` is required).
      params: the model's parameters (with ``model``).
      atomic_numbers: a bare Model's atoms, in order.
      atom_order: ``"strict"``: the atoms must be the model's, in its order (for a periodic
        model: any atoms of its elements). ``"by_species"``: a molecule with the model's
        composition listed in another order is mapped onto the model's order by element;
        forces and per-atom energies come back in the atoms' order.
      **kwargs: passed to :class:`ase.calculators.calculator.Calculator` (``label``, ...).

    Free molecules need ``atoms.pbc`` all False; periodic models need it all True and use the
    atoms' cell (each width at least twice the cutoff) with a neighbour list kept between
    calls. A new cell or new atoms rebind and recompile.

    Raises:
      InputError (at calculation): atoms that differ from the model's (the first differing
        index and both elements named), another composition with ``"by_species"``, or
        periodicity that does not match the model's.
      ase.calculators.calculator.CalculationFailed: a non-finite energy or force.
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies"]

    def __init__(self, run_dir: str | Path | None = None, *,
                 model: ModelSpec | Model | None = None, params: Params = None,
                 atomic_numbers: Any = None, atom_order: str = "strict", **kwargs: Any):
        super().__init__(**kwargs)
        if (run_dir is None) == (model is None):
            raise InputError("Calculator needs either a run directory or model= and params="
                             f"{', not both' if model is not None else ''}")
        if atom_order not in ATOM_ORDERS:
            raise InputError(f"atom_order must be one of {ATOM_ORDERS}, got {atom_order!r}")
        if run_dir is not None:
            from stablejax.pipeline import load_model_dir

            model, _, params = load_model_dir(Path(run_dir).resolve())  # orbax: absolute
        elif params is None:
            raise InputError("Calculator(model=...) needs params=")
        if isinstance(model, Model):
            if model.neighbor_fn is not None:
                raise InputError("a periodic Model needs its ModelSpec: pass model=spec")
            bind_model(model, params, atomic_numbers=atomic_numbers, atom_order=atom_order)
            if model.per_atom_energy_fn is None:
                self.implemented_properties = ["energy", "free_energy", "forces"]
        self.source = model
        self.params = params
        self.atom_order = atom_order
        self._model_atoms = atomic_numbers
        self._key = None
        self._bound: LoadedModel | None = None
        self._evaluate = None
        self._nbrs = None

    @classmethod
    def from_model(cls, model: ModelSpec | Model, params: Params, **kwargs: Any) -> "Calculator":
        """``Calculator(model=model, params=params, **kwargs)``."""
        return cls(model=model, params=params, **kwargs)

    @property
    def loaded(self) -> LoadedModel | None:
        """The binding of the last calculation (None before the first)."""
        return self._bound

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        bound = self._bind(self.atoms)
        R = jnp.asarray(self.atoms.get_positions(wrap=bound.periodic), dtype=bound.dtype)
        if bound.periodic:
            if self._nbrs is None:
                self._nbrs = bound.neighbor_fn.allocate(R)
            E, F, e, nbrs = self._evaluate(self.params, R, self._nbrs)
            if nbrs.did_buffer_overflow:
                self._nbrs = bound.neighbor_fn.allocate(R)
                E, F, e, nbrs = self._evaluate(self.params, R, self._nbrs)
            self._nbrs = nbrs
        else:
            E, F, e = self._evaluate(self.params, R)
        energy = float(E)
        forces = np.asarray(F, dtype=np.float64)
        if not np.isfinite(energy):
            raise CalculationFailed(f"the model gave a non-finite energy ({energy}) for these "
                                    "positions")
        if not np.all(np.isfinite(forces)):
            i = int(np.flatnonzero(~np.isfinite(forces).all(axis=1))[0])
            raise CalculationFailed(f"the model gave a non-finite force on atom {i} for these "
                                    "positions (atoms on top of each other?)")
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        if e is not None:
            self.results["energies"] = np.asarray(e, dtype=np.float64)

    def _bind(self, atoms) -> LoadedModel:
        """Bind (and compile) for these atoms' numbers and cell, unless already bound."""
        z = atoms.get_atomic_numbers()
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if pbc.any() and not pbc.all():
            raise InputError(f"atoms: pbc={pbc.tolist()} is not supported: use all True "
                             "(a periodic box) or all False (a free molecule)")
        periodic_model = (self.source.box is not None if isinstance(self.source, ModelSpec)
                          else False)
        if pbc.all() != periodic_model:
            raise InputError(
                "atoms: periodic (pbc=True) but the model is for a free molecule; set "
                "atoms.pbc = False" if pbc.all() else
                "atoms: not periodic (pbc=False) but the model is for a periodic box; set "
                "atoms.pbc = True and atoms.cell")
        box = np.asarray(atoms.cell.array, dtype=np.float64).T if periodic_model else None
        key = (z.tobytes(), None if box is None else box.tobytes())
        if key == self._key:
            return self._bound
        if isinstance(self.source, Model):
            _check_same_atoms(z, np.asarray(self._model_atoms, dtype=int))
            bound = bind_model(self.source, self.params, atomic_numbers=self._model_atoms)
        else:
            bound = bind_model(self.source, self.params, atomic_numbers=z,
                               atom_order=self.atom_order, box=box, what="atoms")
        self._bound, self._evaluate, self._nbrs = bound, _compile(bound), None
        self._key = key
        return bound


def _compile(bound: LoadedModel):
    """``jit(params, R[, neighbor]) -> (E, F, per-atom E or None[, neighbor])``."""
    per_atom = bound.per_atom_energy_fn_of_params

    def total(params, R, **kwargs):
        if per_atom is None:
            return bound.energy_fn_of_params(params, R, **kwargs), None
        e = per_atom(params, R, **kwargs)
        return jnp.sum(e), e

    value_and_grad = jax.value_and_grad(total, argnums=1, has_aux=True)
    if not bound.periodic:
        def evaluate(params, R):
            (E, e), g = value_and_grad(params, R)
            return E, -g, e
    else:
        def evaluate(params, R, neighbor):
            neighbor = neighbor.update(R)
            (E, e), g = value_and_grad(params, R, neighbor=neighbor)
            return E, -g, e, neighbor
    return jax.jit(evaluate)


def _check_same_atoms(z: np.ndarray, model: np.ndarray) -> None:
    if z.shape != model.shape:
        raise InputError(f"atoms: {z.size} atoms; the model is bound to {model.size} atoms")
    bad = np.flatnonzero(z != model)
    if bad.size:
        i = int(bad[0])
        raise InputError(f"atoms: atom {i} is {chemical_symbols[z[i]]} but the model expects "
                         f"{chemical_symbols[model[i]]} ({bad.size} atoms differ)")
