"""A JSON-serialisable description of a model, so checkpoints can rebuild their energy function."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from stablejax.data.frames import Frames
from stablejax.models import (
    GemNetTConfig,
    Model,
    NequIPConfig,
    SchNetConfig,
    average_num_neighbors,
    energy_statistics,
    make_model,
)

_CONFIGS = {"schnet": SchNetConfig, "nequip": NequIPConfig, "gemnet-t": GemNetTConfig}
#: Kinds whose energy depends on the atoms only through their species (see
#: ``ModelSpec.permutation_invariant``).
_PERMUTATION_INVARIANT = frozenset({"schnet", "nequip", "gemnet-t"})


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a :class:`stablejax.models.Model`.

    Attributes:
      kind: 'schnet', 'nequip' or 'gemnet-t'.
      config: the architecture config's fields.
      atomic_numbers: the system's atoms, in position order.
      energy_shift: {Z: eV} per-atom shift; energy_scale: eV (from the training data).
      avg_num_neighbors: NequIP's and GemNet-T's neighbour normalisation (training data).
      box: periodic box (JAX-MD convention) or None for a free molecule.
    """

    kind: str
    config: dict
    atomic_numbers: tuple[int, ...]
    energy_shift: dict
    energy_scale: float
    avg_num_neighbors: float | None = None
    box: Any = None

    def __post_init__(self):
        if self.kind not in _CONFIGS:
            raise ValueError(f"ModelSpec.kind must be one of {sorted(_CONFIGS)}, got {self.kind!r}")

    @property
    def model_config(self):
        cfg = dict(self.config)
        if cfg.get("species") is not None:
            cfg["species"] = tuple(cfg["species"])
        return _CONFIGS[self.kind](**cfg)

    def default_config(self) -> dict:
        """What each field a stored spec may lack means, as a config dict: the default, or the
        config class's ``ABSENT_FIELDS`` value where a field's absence means the behaviour
        before it existed."""
        cls = _CONFIGS[self.kind]
        return {**dataclasses.asdict(cls()), **getattr(cls, "ABSENT_FIELDS", {})}

    def build(self) -> Model:
        return make_model(self.model_config, np.asarray(self.atomic_numbers), box=self.box,
                          energy_shift={int(k): v for k, v in self.energy_shift.items()},
                          energy_scale=self.energy_scale,
                          avg_num_neighbors=self.avg_num_neighbors)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["energy_shift"] = {str(k): float(v) for k, v in self.energy_shift.items()}
        d["atomic_numbers"] = [int(z) for z in self.atomic_numbers]
        d["box"] = None if self.box is None else np.asarray(self.box).tolist()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ModelSpec":
        config = dict(d["config"])
        if "r_max_angstrom" in config:  # NequIP's own name for the cutoff
            config["cutoff_angstrom"] = config.pop("r_max_angstrom")
        # a spec written before a field existed keeps that time's model (its checkpoints load)
        config = {**getattr(_CONFIGS.get(d["kind"]), "ABSENT_FIELDS", {}), **config}
        return cls(kind=d["kind"], config=config,
                   atomic_numbers=tuple(d["atomic_numbers"]),
                   energy_shift={int(k): float(v) for k, v in d["energy_shift"].items()},
                   energy_scale=float(d["energy_scale"]),
                   avg_num_neighbors=d.get("avg_num_neighbors"), box=d.get("box"))

    def save(self, path: str | Path) -> None:
        """Write the spec atomically (temporary file + rename)."""
        from stablejax.io.run_dir import write_json

        write_json(path, self.to_json())

    def check_species(self, atomic_numbers, what: str, *, hint: str | None = None) -> None:
        """``atomic_numbers`` (of a data set, frames or structure named ``what``) must be the
        model's atoms in the model's order: a molecule's model is bound to its atom list. A
        periodic model (``box`` set) may see another number of atoms, never other elements.

        Args:
          atomic_numbers: [n_atoms] int.
          what: the input's name, for the message.
          hint: the fix suggested for atoms in another order (default: reorder the atoms or
            train a model on this order).

        Raises:
          InputError: naming ``what``, the first differing index and both elements.
        """
        from ase.data import chemical_symbols

        from stablejax.errors import InputError

        model = np.asarray(self.atomic_numbers, dtype=int)
        data = np.asarray(atomic_numbers, dtype=int).reshape(-1)
        if self.box is not None:
            extra = sorted(set(data.tolist()) - set(model.tolist()))
            if extra:
                raise InputError(f"{what}: elements {[chemical_symbols[z] for z in extra]} are "
                                 f"not in the model (it knows "
                                 f"{sorted({chemical_symbols[z] for z in model})})")
            return
        if data.shape != model.shape:
            raise InputError(f"{what} has {data.size} atoms; the model is bound to a molecule of "
                             f"{model.size} atoms")
        bad = np.flatnonzero(data != model)
        if bad.size:
            i = int(bad[0])
            raise InputError(
                f"{what}: atom {i} is {chemical_symbols[data[i]]} but the model expects "
                f"{chemical_symbols[model[i]]} ({bad.size} atoms differ; the model is bound to "
                f"its molecule's atom order: "
                f"{hint or 'reorder the atoms or train a model on this order'})")

    @property
    def species(self) -> tuple[int, ...]:
        """The atomic numbers the model knows, in the order of its embedding rows."""
        from stablejax.models import species_index

        return species_index(np.asarray(self.atomic_numbers, dtype=int),
                             self.model_config.species)[0]

    @property
    def permutation_invariant(self) -> bool:
        """True: the energy depends on the atoms only through their species (SchNet, NequIP,
        GemNet-T: species-indexed embeddings and per-species shift and scale; sums over all atom
        pairs and triplets), so atoms of one element may be listed in any order."""
        return self.kind in _PERMUTATION_INVARIANT

    def atom_permutation(self, atomic_numbers, what: str) -> np.ndarray:
        """The order that maps a molecule listed in another atom order onto the model's.

        Atoms of each element keep their relative order (a stable sort by species), so
        ``atomic_numbers[perm] == self.atomic_numbers``; positions in the input order map to the
        model's as ``R[perm]``, and model-order forces ``F`` back as ``F_in[perm] = F``.

        Args:
          atomic_numbers: [n_atoms] int, the input's atoms.
          what: the input's name, for the messages.

        Returns:
          [n_atoms] int permutation.

        Raises:
          InputError: a model that is not permutation invariant, or another composition (the
            elements whose counts differ are named).
        """
        from ase.data import chemical_symbols

        from stablejax.errors import InputError

        if not self.permutation_invariant:
            raise InputError(f"{what}: a {self.kind} model may depend on atom indices, so atoms "
                             "in another order cannot be mapped onto it; reorder the atoms")
        model = np.asarray(self.atomic_numbers, dtype=int)
        data = np.asarray(atomic_numbers, dtype=int).reshape(-1)
        zs = sorted(set(model.tolist()) | set(data.tolist()))
        counts = {z: (int(np.sum(data == z)), int(np.sum(model == z))) for z in zs}
        differ = [f"{chemical_symbols[z]} {got} (model {want})"
                  for z, (got, want) in counts.items() if got != want]
        if differ:
            raise InputError(f"{what}: another composition than the model's molecule: "
                             f"{', '.join(differ)}")
        perm = np.empty(model.size, dtype=int)
        perm[np.argsort(model, kind="stable")] = np.argsort(data, kind="stable")
        return perm

    def for_system(self, atomic_numbers, box) -> "ModelSpec":
        """The spec of this periodic model (same parameters) for another periodic system.

        Args:
          atomic_numbers: [n_atoms] int, the system's atoms (elements the model knows).
          box: the system's box, JAX-MD convention (see :func:`stablejax.models.make_model`).

        Raises:
          InputError: a free-molecule model, or elements the model does not know.
        """
        from stablejax.errors import InputError

        if self.box is None:
            raise InputError("the model is for a free molecule (no box): it cannot be bound to "
                             "a periodic system")
        self.check_species(atomic_numbers, "system")
        config = dict(self.config, species=list(self.species))  # same embedding rows
        return dataclasses.replace(self, config=config,
                                   atomic_numbers=tuple(int(z) for z in atomic_numbers),
                                   box=np.asarray(box, dtype=float).tolist())

    @classmethod
    def load(cls, path: str | Path) -> "ModelSpec":
        return cls.from_json(json.loads(Path(path).read_text()))


def _warn_if_cutoff_sees_no_neighbours(cutoff_angstrom: float, train: Frames) -> None:
    """A cutoff below the shortest interatomic distance of the first training frame gives a
    model that sees no neighbours: every force is zero. Warn (a legal but absurd setting)."""
    R = np.asarray(train.positions[0], dtype=float)
    if any(train.pbc) or len(R) < 2:
        return
    d = np.linalg.norm(R[:, None] - R[None], axis=-1)
    shortest = float(d[np.triu_indices(len(R), 1)].min())
    if cutoff_angstrom < shortest:
        warnings.warn(f"cutoff_angstrom={cutoff_angstrom} is below the shortest interatomic "
                      f"distance of the training frames ({shortest:.3f} Angstrom): the model "
                      "sees no neighbours and every force is zero", stacklevel=3)


def spec_from_data(kind: str, train: Frames,
                   config: SchNetConfig | NequIPConfig | GemNetTConfig | None = None,
                   **config_overrides) -> ModelSpec:
    """A :class:`ModelSpec` whose normalisation (energy shift/scale, NequIP's average neighbour
    count, also used by GemNet-T) is computed from the training frames."""
    if kind not in _CONFIGS:
        raise ValueError(f"unknown model {kind!r}; choose one of {sorted(_CONFIGS)}")
    cfg = config or _CONFIGS[kind](**config_overrides)
    _warn_if_cutoff_sees_no_neighbours(cfg.cutoff_angstrom, train)
    stats = energy_statistics(train)
    avg = None
    if kind in ("nequip", "gemnet-t"):
        avg = average_num_neighbors(train, cfg.cutoff_angstrom)
    box = None
    if any(train.pbc):
        from stablejax.data.cell import check_cell

        check_cell(train.cell, cutoff_angstrom=cfg.cutoff_angstrom,
                   source=f"{kind} cutoff_angstrom={cfg.cutoff_angstrom:g} in the training cell")
        box = np.asarray(train.cell if train.cell.ndim == 2 else train.cell[0]).T
    return ModelSpec(kind=kind, config=dataclasses.asdict(cfg),
                     atomic_numbers=tuple(int(z) for z in train.atomic_numbers),
                     energy_shift=stats.shift, energy_scale=stats.scale,
                     avg_num_neighbors=avg, box=box)
