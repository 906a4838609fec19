"""MD throughput: stablejax's batched Langevin replicas vs ASE's MD loop, same jitted model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/md_throughput.py --quick     # smoke test
    .venv/bin/python benchmarks/md_throughput.py --replicas 1 32 128 512 --steps 1000

Systems: (a) SchNet with the paper's aspirin hyperparameters (cutoff 5 A, 64 features, 6
interactions, 25 Gaussians; random-init parameters: throughput only) on the aspirin equilibrium
structure of ``--data`` or an RDKit embedding, 500 K, dt 0.5 fs; (b) a JAX-MD Lennard-Jones fluid
(argon sigma/epsilon/mass, fcc start, 4 k^3 atoms at reduced density 0.8, periodic box, dense
neighbour list), T* = 1 (120 K), dt 5 fs; (c) ``water``: the same SchNet (cutoff 5 A) with a
periodic dense JAX-MD neighbour list on the 64-molecule SPC/Fw box of
:mod:`stablejax.data.water_model` (cubic, edge 12.43 A at 0.997 g/cm3; the seeded lattice box
minimised with the SPC/Fw force field, or test frame 0 of a water data set given as ``--data``),
300 K, dt 1 fs; ``--water-model gemnet-t`` runs the box with the cpu-scale GemNet-T instead
(``GemNetTConfig.cpu_scale()``, 4 A, untrained: the cost of a step does not depend on the
parameters' values, and thermal atom speeds set how often the neighbour list is rebuilt).
All use Langevin with gamma ``--gamma-per-ps`` (default 0.1/ps). ``--data`` feeds
the system it holds: a periodic data set the water box, any other the aspirin structure.

For water, one more line gives the reference force field's own speed on the same box
(``engine="openmm"``): SPC/Fw in OpenMM (PME, cutoff 6 A, as the water data sets), CPU platform
on one thread (single precision), ``LangevinMiddleIntegrator`` at 300 K, 1 fs, the same gamma;
``--openmm-steps`` steps after a warm-up, median of ``--repeats``; ``ps_per_cpu_s`` = simulated ps
per CPU-second of this process, ``replica_steps_per_s`` per wall-second.

Per (system, dtype): one ASE line (``ase.md.langevin.Langevin``, fixcm=False, with an ASE
Calculator calling the jitted energy+forces of one replica on the same device; replica-steps/s
is per replica, so it applies unchanged to N replicas run one after another), then one
stablejax line per replica count (``make_simulator(..., integrator="langevin")``: one compiled
chunk of ``--steps`` steps). ``compile_s`` is timed separately: AOT ``lower().compile()`` of the
chunk (stablejax), the first jitted call (ASE calculator). Timed runs use ``block_until_ready``;
the median of ``--repeats`` is reported. ``step_over_force_ratio`` = time of one MD step / time
of one bare force evaluation of the same replicas (``jit(vmap(grad(energy)))``, fixed neighbour
list, evaluated in a
``lax.scan`` so that dispatch is excluded, as in the MD chunk; for ASE: one Python-side jitted
energy+forces call, dispatch and host copies included). float64 configurations run last, after
enabling x64 in this script. One JSON line per configuration on stdout; besides the documented
keys: ``steps``, ``n_atoms``, ``device``, ``model_config``, ``n_frozen`` (replicas that hit a
non-finite force: frozen by stablejax, or non-finite at the end of the ASE run; a frozen replica
still costs a full step, so throughput stays comparable) and ``neighbor_overflow``.
``--quick`` (smoke test only, numbers meaningless): replicas 1 and 4, 20 steps, 5 ASE steps,
50 OpenMM steps, 1 repeat, 108 LJ atoms and a 1-interaction, 16-feature SchNet (the water box
keeps its 192 atoms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ASPIRIN_SMILES = "CC(=O)Oc1ccccc1C(=O)O"
ARGON = dict(sigma=3.405, epsilon=0.0104, mass=39.948)  # Angstrom, eV, amu
warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
warnings.filterwarnings("ignore", message="scatter inputs have incompatible types")  # jax_md, x64


def build_system(name: str, dtype: str, args) -> dict:
    """Model, parameters, start structure [n_atoms, 3] and MD settings of one benchmark system."""
    from stablejax.models import SchNetConfig, lennard_jones_model, make_model

    hyper = (dict(n_interactions=1, hidden_features=16, n_filters=16, n_gaussians=8)
             if args.quick else {})  # quick: tiny SchNet; else the paper's defaults
    if name == "water":
        from ase.data import atomic_masses

        z, R_whole, edge, source = water_box(args)
        R = np.mod(R_whole, edge)
        if args.water_model == "gemnet-t":
            from stablejax.models import GemNetTConfig, average_num_neighbors
            from stablejax.data import make_frames

            tiny = dict(n_blocks=1, emb_size_atom=8, emb_size_edge=8) if args.quick else {}
            cfg = GemNetTConfig.cpu_scale(param_dtype=dtype, **tiny)
            avg = average_num_neighbors(make_frames(R[None], z, cell=np.eye(3) * edge),
                                        cfg.cutoff_angstrom)
            model = make_model(cfg, z, box=edge, avg_num_neighbors=avg)
        else:
            cfg = SchNetConfig(param_dtype=dtype, cutoff_angstrom=5.0, **hyper)
            model = make_model(cfg, z, box=edge)
        return dict(model=model, params=model.init(jax.random.PRNGKey(0), jnp.asarray(R, dtype)),
                    R=R, masses=atomic_masses[z], numbers=z, dt_fs=1.0, temperature_k=300.0,
                    R_whole=R_whole, box=edge, label=args.water_model, system="water",
                    model_config={**{k: v for k, v in cfg.__dict__.items() if k != "species"},
                                  "box_angstrom": edge, "structure": source})
    if name == "aspirin":
        data = _dataset(args, periodic=False)
        if data is not None:
            system = data.system
            z, R, system_name = system.atomic_numbers, system.equilibrium_positions, system.name
        elif args.structure is not None:  # machines without RDKit (benchmarks/gpu_check.sh)
            import ase.io

            atoms = ase.io.read(args.structure)
            z, R, system_name = atoms.numbers, atoms.positions, "aspirin"
        else:
            from stablejax.data.structures import embed_smiles

            z, R = embed_smiles(ASPIRIN_SMILES)
            system_name = "aspirin"
        cfg = SchNetConfig(param_dtype=dtype, **hyper)
        model = make_model(cfg, np.asarray(z))
        from ase.data import atomic_masses

        return dict(model=model, params=model.init(jax.random.PRNGKey(0), jnp.asarray(R, dtype)),
                    R=np.asarray(R), masses=atomic_masses[np.asarray(z)], numbers=np.asarray(z),
                    dt_fs=0.5, temperature_k=500.0, box=None, label="schnet",
                    system=system_name,
                    model_config={k: v for k, v in cfg.__dict__.items() if k != "species"})
    k = args.lj_cells  # fcc: 4 k^3 atoms
    cell = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    n = 4 * k**3
    box = (n / 0.8) ** (1 / 3) * ARGON["sigma"]  # reduced density 0.8
    R = ((grid + cell[None]).reshape(-1, 3) + 0.25) * (box / k)
    model = lennard_jones_model(box=box, sigma=ARGON["sigma"], epsilon=ARGON["epsilon"],
                                capacity_multiplier=1.5, dtype=dtype)
    return dict(model=model, params=model.init(None, R), R=R, masses=np.full(n, ARGON["mass"]),
                numbers=np.full(n, 18), dt_fs=5.0, temperature_k=ARGON["epsilon"] / 8.617333e-5,
                box=box, label="lennard_jones", system="lj_fluid",
                model_config={"n_atoms": n, "box_angstrom": box})


def _dataset(args, periodic: bool):
    """The ``--data`` data set if it holds a periodic (``periodic``) or free system, else None."""
    if args.data is None:
        return None
    from stablejax.data import load_dataset

    data = load_dataset(args.data)
    return data if (data.system.cell is not None) == periodic else None


def water_box(args) -> tuple[np.ndarray, np.ndarray, float, str]:
    """The 64-molecule SPC/Fw box: atomic numbers [192], positions [192, 3] with whole
    molecules (Angstrom; wrap them by atom for JAX-MD, not for OpenMM, whose bonds ignore the
    periodic box), cubic edge (Angstrom) and where the positions come from.

    Raises:
      ValueError: the ``--data`` water set is not a cubic 64-molecule box ordered O, H, H.
    """
    from stablejax.data.water_config import WaterConfig
    from stablejax.data.water_model import (lattice_box, make_openmm_system, minimise,
                                            water_numbers)

    cfg = WaterConfig()
    z = water_numbers(cfg.n_molecules)[0]
    data = _dataset(args, periodic=True)
    if data is None:
        edge = cfg.edge_angstrom
        _, system = make_openmm_system(cfg.n_molecules, edge, cfg.cutoff, cfg.ewald_tolerance)
        R = minimise(system, lattice_box(cfg.n_molecules, edge, cfg.seed))
        source = f"minimised lattice box, seed {cfg.seed}"
    else:
        cell = np.asarray(data.test.cell, np.float64).reshape(-1, 3, 3)[0]
        edge = float(cell[0, 0])
        if (not np.allclose(cell, edge * np.eye(3))
                or not np.array_equal(data.system.atomic_numbers, z)):
            raise ValueError(f"{args.data}: the water benchmark needs a cubic box of "
                             f"{cfg.n_molecules} molecules ordered O, H, H; got cell "
                             f"{cell.tolist()} and {len(data.system.atomic_numbers)} atoms")
        R = np.asarray(data.test.positions[0], np.float64)
        source = f"{args.data}: test frame 0"
    return z, R, edge, source


def bench_openmm(s: dict, args) -> dict:
    """SPC/Fw in OpenMM on the water box: CPU platform, one thread, LangevinMiddle."""
    from stablejax.data.water_config import WaterConfig
    from stablejax.data.water_model import langevin, make_context, make_openmm_system, set_state

    cfg = WaterConfig()
    _, system = make_openmm_system(cfg.n_molecules, s["box"], cfg.cutoff, cfg.ewald_tolerance)
    integ = langevin(s["temperature_k"], args.gamma_per_ps, s["dt_fs"], 1)
    t = time.perf_counter()
    ctx = make_context(system, integ)
    set_state(ctx, s["R_whole"])
    ctx.setVelocitiesToTemperature(s["temperature_k"], 1)
    integ.step(10)  # warm-up
    setup_s = time.perf_counter() - t
    wall, cpu = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        integ.step(args.openmm_steps)
        ctx.getState(getEnergy=True)  # waits for the steps to finish
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    ps = args.openmm_steps * s["dt_fs"] / 1000.0
    wall_s, cpu_s = statistics.median(wall), statistics.median(cpu)
    return dict(engine="openmm", n_replicas=1, replica_steps_per_s=args.openmm_steps / wall_s,
                compile_s=setup_s, step_over_force_ratio=None, ps_per_cpu_s=ps / cpu_s,
                ps_per_wall_s=ps / wall_s, steps=args.openmm_steps, n_frozen=0,
                openmm_platform="CPU", openmm_threads=1,
                openmm_model=f"SPC/Fw, PME cutoff {cfg.cutoff:g} A, "
                             f"ewald tolerance {cfg.ewald_tolerance:g}")


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_ase(s: dict, dtype: str, args) -> dict:
    """ASE Langevin on one replica with a Calculator around the jitted energy+forces."""
    from ase import Atoms, units
    from ase.calculators.calculator import Calculator, all_changes
    from ase.md.langevin import Langevin

    model, params, nbr_fn = s["model"], s["params"], s["model"].neighbor_fn

    @jax.jit
    def energy_forces(params, R, nbr):
        kw = {}
        if nbr is not None:
            nbr = nbr.update(R)
            kw["neighbor"] = nbr
        e, g = jax.value_and_grad(model.energy_fn, argnums=1)(params, R, **kw)
        return e, -g, nbr

    class JaxCalculator(Calculator):
        implemented_properties = ["energy", "forces"]

        def __init__(self):
            super().__init__()
            R0 = jnp.asarray(s["R"], dtype)
            self.nbr = None if nbr_fn is None else nbr_fn.allocate(R0)

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            R = self.atoms.positions if s["box"] is None else np.mod(self.atoms.positions,
                                                                      s["box"])
            R = jnp.asarray(R, dtype)
            e, f, nbr = energy_forces(params, R, self.nbr)
            if nbr is not None and bool(nbr.did_buffer_overflow):
                self.nbr = nbr_fn.allocate(R)
                e, f, nbr = energy_forces(params, R, self.nbr)
            self.nbr = nbr
            self.results = {"energy": float(e), "forces": np.asarray(f, np.float64)}

    atoms = Atoms(numbers=s["numbers"], positions=s["R"], masses=s["masses"],
                  cell=None if s["box"] is None else np.eye(3) * s["box"], pbc=s["box"] is not None)
    atoms.calc = JaxCalculator()
    t = time.perf_counter()
    atoms.get_forces()  # first call: jit compile
    compile_s = time.perf_counter() - t
    kT = units.kB * s["temperature_k"]  # Maxwell-Boltzmann momenta, ASE units (amu, eV)
    m = s["masses"][:, None]
    atoms.set_momenta(np.sqrt(m * kT) * np.random.default_rng(0).normal(size=s["R"].shape))
    dyn = Langevin(atoms, timestep=s["dt_fs"] * units.fs, temperature_K=s["temperature_k"],
                   friction=args.gamma_per_ps / 1000 / units.fs, fixcm=False,
                   rng=np.random.default_rng(1))
    dyn.run(2)  # warm-up
    run_s = _median_time(lambda: dyn.run(args.ase_steps), args.repeats)
    R = jnp.asarray(atoms.positions if s["box"] is None else np.mod(atoms.positions, s["box"]),
                    dtype)
    nbr = atoms.calc.nbr
    force_s = _median_time(lambda: np.asarray(energy_forces(params, R, nbr)[1]),
                           max(args.ase_steps, 3))
    rate = args.ase_steps / run_s
    return dict(engine="ase", n_replicas=1, replica_steps_per_s=rate, compile_s=compile_s,
                step_over_force_ratio=(run_s / args.ase_steps) / force_s, speedup_vs_ase=1.0,
                steps=args.ase_steps, n_frozen=int(not np.isfinite(atoms.get_forces()).all()))


def bench_stablejax(s: dict, dtype: str, n_rep: int, args) -> dict:
    """One compiled chunk of ``args.steps`` Langevin steps for ``n_rep`` replicas."""
    from stablejax.simulate import make_simulator

    model, params = s["model"], s["params"]
    fpc = 10 if args.steps % 10 == 0 else 1
    periodic = s["box"] is not None
    sim = make_simulator(
        model.energy_fn, masses=s["masses"], dt_fs=s["dt_fs"], n_dump=args.steps // fpc,
        integrator="langevin", temperature_k=s["temperature_k"], gamma_per_ps=args.gamma_per_ps,
        displacement_fn=model.displacement_fn if periodic else None,
        shift_fn=model.shift_fn if periodic else None, neighbor_fn=model.neighbor_fn,
        frames_per_chunk=fpc)
    noise = 0.01 * jax.random.normal(jax.random.PRNGKey(1), (n_rep,) + s["R"].shape)
    R = jnp.asarray(s["R"], dtype) + noise.astype(dtype)
    state = jax.block_until_ready(sim.init(params, R, jax.random.PRNGKey(2)))
    t = time.perf_counter()
    chunk = sim.run_chunk.lower(params, state).compile()
    compile_s = time.perf_counter() - t
    state = jax.block_until_ready(chunk(params, state)[0])  # warm-up
    holder = {"state": state}

    def one_chunk():
        holder["state"] = chunk(params, holder["state"])[0]
        return holder["state"]

    run_s = _median_time(one_chunk, args.repeats)
    overflow = bool(jnp.any(holder["state"].neighbor_overflow))

    def grad_one(p, R, nbr):
        kw = {} if nbr is None else {"neighbor": nbr}
        return jax.grad(model.energy_fn, argnums=1)(p, R, **kw)

    force = jax.vmap(grad_one, in_axes=(None, 0, 0 if periodic else None))

    @jax.jit
    def forces_loop(p, R, nbr):  # args.steps force evaluations, no dispatch in between
        def body(R, _):
            return R + 1e-6 * force(p, R, nbr), None  # carried so XLA cannot hoist it
        return lax.scan(body, R, None, length=args.steps)[0]

    R = holder["state"].positions
    nbr = holder["state"].neighbor
    jax.block_until_ready(forces_loop(params, R, nbr))
    force_s = _median_time(lambda: forces_loop(params, R, nbr), args.repeats)
    return dict(engine="stablejax", n_replicas=n_rep,
                replica_steps_per_s=n_rep * args.steps / run_s, compile_s=compile_s,
                step_over_force_ratio=run_s / force_s, steps=args.steps,
                neighbor_overflow=overflow,
                n_frozen=int(jnp.sum(holder["state"].frozen)))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 32, 128, 512])
    p.add_argument("--systems", nargs="+", choices=["aspirin", "lj", "water"],
                   default=["aspirin", "lj"])
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                   default=["float32", "float64"])
    p.add_argument("--water-model", choices=["schnet", "gemnet-t"], default="schnet",
                   help="model of the water system")
    p.add_argument("--steps", type=int, default=1000, help="MD steps per timed chunk")
    p.add_argument("--ase-steps", type=int, default=200, help="ASE steps per timed run")
    p.add_argument("--openmm-steps", type=int, default=2000,
                   help="OpenMM steps per timed run (water)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gamma-per-ps", type=float, default=0.1)
    p.add_argument("--lj-cells", type=int, default=4, help="fcc cells per side (4 k^3 atoms)")
    p.add_argument("--data", default=None,
                   help="data set directory: an aspirin set (its equilibrium structure) or a "
                        "water set (its first test frame and cell)")
    p.add_argument("--structure", default=None,
                   help="aspirin structure file read by ASE (e.g. benchmarks/aspirin.xyz, the "
                        "RDKit embedding of the default run) instead of embedding it with RDKit")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = p.parse_args(argv)
    if args.quick:  # tiny defaults; options given explicitly still win
        p.set_defaults(replicas=[1, 4], steps=20, ase_steps=5, openmm_steps=50, repeats=1,
                       lj_cells=3)
        args = p.parse_args(argv)
    if min(args.steps, args.ase_steps, args.openmm_steps, args.repeats, *args.replicas) < 1:
        p.error("--steps, --ase-steps, --openmm-steps, --repeats and --replicas must be >= 1")
    device = jax.devices()[0]
    dtypes = sorted(set(args.dtypes), key=["float32", "float64"].index)
    for dtype in dtypes:
        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)  # last, so float32 runs are unaffected
        for name in args.systems:
            s = build_system(name, dtype, args)
            base = dict(bench="md_throughput", system=s["system"], model=s["label"], dtype=dtype)
            extra = dict(n_atoms=len(s["R"]), device=f"{device.platform}:{device.device_kind}",
                         model_config=s["model_config"], quick=args.quick)
            ase = bench_ase(s, dtype, args)
            print(json.dumps(_line(base, ase, extra)), flush=True)
            if name == "water" and dtype == dtypes[0]:  # once: OpenMM's precision is its own
                mm = bench_openmm(s, args)
                mm["speedup_vs_ase"] = mm["replica_steps_per_s"] / ase["replica_steps_per_s"]
                print(json.dumps(_line({**base, "model": "spcfw_openmm", "dtype": "float32"}, mm,
                                       {**extra, "device": "cpu:1 thread",
                                        "model_config": None})), flush=True)
            for n_rep in args.replicas:
                r = bench_stablejax(s, dtype, n_rep, args)
                r["speedup_vs_ase"] = r["replica_steps_per_s"] / ase["replica_steps_per_s"]
                print(json.dumps(_line(base, r, extra)), flush=True)


def _line(base: dict, result: dict, extra: dict) -> dict:
    """The JSON record: the documented keys first, then details."""
    keys = ("n_replicas", "engine", "replica_steps_per_s", "compile_s", "step_over_force_ratio",
            "speedup_vs_ase")
    return {**base, **{k: result[k] for k in keys}, **result, **extra}


if __name__ == "__main__":
    main()
