"""One process of a multi-host StABlE run, started by tests/test_sharding.py: two processes on
localhost join with jax.distributed (one CPU device each) and train the LJ fluid of
tests/lj_fluid.py for EPOCHS epochs on the two-device mesh, writing one run directory; the same
script with ``--single`` runs the identical job in one process on its own devices (two host
devices give the same mesh). Prints the final sigma, the phases and how many log records this
process emitted as one JSON line.

    python tests/multihost_worker.py RUN_DIR EPOCHS COORDINATOR PROCESS_ID
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/multihost_worker.py RUN_DIR EPOCHS --single
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
RUN_DIR, EPOCHS = sys.argv[1], int(sys.argv[2])
SINGLE = sys.argv[3] == "--single"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
from stablejax.sharding import initialize_distributed, make_mesh  # noqa: E402


class Count(logging.Handler):
    n = 0

    def emit(self, record):
        Count.n += 1


logging.getLogger("stablejax").addHandler(Count())
logging.getLogger("stablejax").setLevel(logging.INFO)  # process 1: raised to ERROR by stablejax
if not SINGLE:
    initialize_distributed(sys.argv[3], 2, int(sys.argv[4]), timeout_s=60)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax_md import space  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import lj_fluid as L  # noqa: E402

from stablejax.config import replace  # noqa: E402
from stablejax.simulate import make_simulator  # noqa: E402
from stablejax.stability.criteria import min_intermolecular_distance_criterion  # noqa: E402
from stablejax.errors import InputError  # noqa: E402
from stablejax.train import TrainState, train  # noqa: E402

mesh = make_mesh()  # every device: two processes x 1, or one process x 2 (or 1)
lj = L.make_lj()
disp, shift = space.periodic(L.BOX)
criterion = min_intermolecular_distance_criterion(np.arange(L.N_ATOMS),
                                                  threshold_angstrom=L.THRESHOLD, cell=L.BOX)
sim = make_simulator(L.lj_energy, masses=np.full(L.N_ATOMS, L.MASS), dt_fs=L.DT_FS,
                     n_dump=L.N_DUMP, integrator="nose_hoover", temperature_k=L.TEMPERATURE_K,
                     displacement_fn=disp, shift_fn=shift, criterion=criterion,
                     frames_per_chunk=L.FRAMES_PER_CHUNK, mesh=mesh)
problem = lj.problem._replace(simulator=sim, mesh=mesh)
cfg = L.base_cfg(n_replicas=3, n_epochs=EPOCHS, stable_epochs=None)
if "LEARNING_RATE" in os.environ:  # another config: resuming the run directory is refused
    cfg = replace(cfg, {"optimizer": {"learning_rate": float(os.environ["LEARNING_RATE"])}})
phases = []
state = TrainState.create(problem, {"sigma": jnp.asarray(2.2, jnp.float64)}, cfg)
try:
    state = train(state, cfg, run_dir=RUN_DIR,
                  progress=lambda d, t, i: phases.append(i["phase"]) if "phase" in i else None)
except InputError as e:
    print(json.dumps({"process": jax.process_index(), "error": str(e)}))
    raise SystemExit(2)
print(json.dumps({"process": jax.process_index(), "sigma": float(state.params["sigma"]),
                  "phases": phases, "log_records": Count.n}))
