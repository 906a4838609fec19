"""Settings of the liquid-water reference data (:mod:`stablejax.data.water`) and their scales.

Scales (64 molecules). Wall times measured with ``python -m stablejax data generate water``
on this 2-core machine while it was shared (2 workers, OpenMM CPU platform, one thread each;
3.5 ps of SPC/Fw MD per CPU-second alone, 2.3-2.8 in these runs):

========  ===================  ============  ===================================  =====  ========
scale     train / val / test   trajectories  reference trajectory                 MD ps  wall
========  ===================  ============  ===================================  =====  ========
demo      200 / 50 / 200       2 + 1         200 ps, a frame every 100 fs (2,000)   285  99 s
cpu       300 / 50 / 300       4 + 2         500 ps, a frame every 100 fs (5,000)   647  307 s
paper     950 / 50 / 1,000     4 + 4         1 ns, a frame every 250 fs (4,000)    1180  ~6 min
========  ===================  ============  ===================================  =====  ========

The paper row is an estimate (not run). "trajectories" = train/val + test trajectories; each
trajectory, and the reference trajectory, starts from the minimised lattice box with its own Maxwell-Boltzmann velocities and
is equilibrated for ``equilibration_ps`` (discarded) before frames are kept. Labelled frames are
``sample_every`` steps (10 fs) apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

from stablejax.data.water_model import box_edge_angstrom
from stablejax.errors import InputError

#: Default real-space cutoff of PME where the box allows it, Angstrom.
DEFAULT_CUTOFF_ANGSTROM = 6.0
#: Smallest real-space cutoff accepted, Angstrom: above the O-O Lennard-Jones sigma (3.17 A) so
#: that the first-shell repulsion and attraction are inside it (16 molecules, 3.6 A, is the
#: smallest box the default cutoff rule allows).
MIN_CUTOFF_ANGSTROM = 3.5

SCALES = {
    "demo": dict(n_train=200, n_val=50, n_test=200, n_trajectories=2, n_test_trajectories=1,
                 reference_ps=200.0, reference_sample_every=100),
    "cpu": dict(n_train=300, n_val=50, n_test=300, n_trajectories=4, n_test_trajectories=2,
                reference_ps=500.0, reference_sample_every=100),
    "paper": dict(n_train=950, n_val=50, n_test=1000, n_trajectories=4, n_test_trajectories=4,
                  reference_ps=1000.0, reference_sample_every=250),
}


def default_cutoff(edge_angstrom: float) -> float:
    """6 A where it is below half the box, else 0.46 of the edge rounded down to 0.1 A (4.5 A
    for 32 molecules)."""
    if DEFAULT_CUTOFF_ANGSTROM < 0.5 * edge_angstrom:
        return DEFAULT_CUTOFF_ANGSTROM
    return math.floor(4.6 * edge_angstrom) / 10.0


@dataclasses.dataclass(frozen=True)
class WaterConfig:
    """Settings of one water data set (every field enters the cache key).

    Attributes:
      n_molecules: H2O molecules in the cubic box.
      density_g_cm3: density fixing the box edge.
      cutoff_angstrom: PME real-space cutoff, Angstrom (None: :func:`default_cutoff`).
      ewald_tolerance: OpenMM ``ewaldErrorTolerance``.
      temperature_k, friction_per_ps, timestep_fs: LangevinMiddle thermostat and step.
      equilibration_ps: discarded MD at the start of every trajectory, ps.
      n_train, n_val: frames drawn from the first ``n_trajectories`` trajectories.
      n_test: frames from ``n_test_trajectories`` further trajectories.
      sample_every: steps between labelled frames.
      reference_ps: length of the contiguous reference trajectory, ps.
      reference_sample_every: steps between reference frames.
      chunk_steps: steps per resumable chunk (a multiple of both sampling intervals).
      seed: seed of the box, velocities, thermostat noise and splits.
    """

    n_molecules: int = 64
    density_g_cm3: float = 0.997
    cutoff_angstrom: float | None = None
    ewald_tolerance: float = 5e-4
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    timestep_fs: float = 1.0
    equilibration_ps: float = 20.0
    n_train: int = 200
    n_val: int = 50
    n_test: int = 200
    n_trajectories: int = 2
    n_test_trajectories: int = 1
    sample_every: int = 10
    reference_ps: float = 200.0
    reference_sample_every: int = 100
    chunk_steps: int = 5000
    seed: int = 0

    def __post_init__(self):
        ints = dict(n_molecules=1, n_train=1, n_val=0, n_test=1, n_trajectories=1,
                    n_test_trajectories=1, sample_every=1, reference_sample_every=1,
                    chunk_steps=1)
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"WaterConfig.{name} must be an integer >= {low}, got {v!r}")
        for name in ("density_g_cm3", "ewald_tolerance", "temperature_k", "friction_per_ps",
                     "timestep_fs", "reference_ps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < float("inf")):
                raise InputError(f"WaterConfig.{name} must be a finite number > 0, got {v!r}")
        if not (0 <= self.equilibration_ps < float("inf")):
            raise InputError(f"WaterConfig.equilibration_ps must be >= 0, got "
                             f"{self.equilibration_ps!r}")
        for name in ("sample_every", "reference_sample_every"):
            if self.chunk_steps % getattr(self, name):
                raise InputError(f"WaterConfig.chunk_steps {self.chunk_steps} must be a multiple "
                                 f"of {name} {getattr(self, name)}")
        if self.n_molecules < 2:
            raise InputError(f"--molecules must be >= 2, got {self.n_molecules}")
        edge = self.edge_angstrom
        cut = self.cutoff
        if not 0 < cut < 0.5 * edge:
            raise InputError(f"water: PME cutoff {cut:g} Angstrom must be > 0 and below half the "
                             f"box edge {0.5 * edge:.4g} Angstrom ({self.n_molecules} molecules); "
                             "use a smaller cutoff or more molecules")
        if cut < MIN_CUTOFF_ANGSTROM:
            raise InputError(f"water: PME cutoff {cut:g} Angstrom is below {MIN_CUTOFF_ANGSTROM:g} "
                             f"Angstrom (the O-O Lennard-Jones sigma is 3.17 A); the "
                             f"{self.n_molecules}-molecule box (edge {edge:.4g} A) is too small: "
                             "use 16 molecules or more")

    @property
    def edge_angstrom(self) -> float:
        return box_edge_angstrom(self.n_molecules, self.density_g_cm3)

    @property
    def cutoff(self) -> float:
        """The PME real-space cutoff in use, Angstrom."""
        if self.cutoff_angstrom is None:
            return default_cutoff(self.edge_angstrom)
        return float(self.cutoff_angstrom)

    @property
    def system(self) -> str:
        return "water" if self.n_molecules == 64 else f"water{self.n_molecules}"

    def record(self) -> dict:
        """JSON-ready settings (with the derived box edge and cutoff)."""
        return {"system": self.system, "model": "SPC/Fw (Wu, Tepper, Voth 2006)",
                **dataclasses.asdict(self), "cutoff_angstrom": self.cutoff,
                "edge_angstrom": self.edge_angstrom}

    def digest(self) -> str:
        """Cache key: hash of :meth:`record`."""
        text = json.dumps(self.record(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def water_config(scale: str = "demo", **overrides) -> WaterConfig:
    """The :class:`WaterConfig` of a scale (``demo``, ``cpu``, ``paper``) with ``overrides``.

    Raises:
      InputError: an unknown scale or an invalid setting.
    """
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    return WaterConfig(**{**SCALES[scale], **overrides})
