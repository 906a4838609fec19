"""Pre-training on real labels of a classical potential (exact data, fast)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import energy, simulate, space

from stablejax.data import make_frames
from stablejax.models import SchNetConfig, lennard_jones_model, make_model
from stablejax.train import (
    PretrainConfig,
    PretrainState,
    QMLossConfig,
    evaluate_qm,
    load_best_params,
    observe_plateau,
    plateau_of,
    pretrain,
    scale_by_plateau,
    stable_optimizer,
)
from stablejax.units import FS

SIGMA, EPS = 1.0, 0.5  # Angstrom, eV


def lj_frames(n_frames=64, seed=0):
    """Perturbed 2x2x2 cluster labelled by the true Lennard-Jones potential (float64)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.15
    R = grid[None] + rng.normal(scale=0.06, size=(n_frames, 8, 3))
    disp, _ = space.free()
    with jax.enable_x64(True):
        f = energy.lennard_jones_pair(disp, sigma=SIGMA, epsilon=EPS)
        E, G = jax.vmap(jax.value_and_grad(f))(jnp.asarray(R))
        E, F = np.asarray(E), -np.asarray(G)
    return make_frames(R, np.full(8, 18), E, F)


def test_plateau_matches_torch_semantics():
    """scale_by_plateau follows PyTorch's ReduceLROnPlateau (the reference's scheduler): a
    reduction after MORE than `patience` values without improvement, and the update of a step
    uses the scale from before that step's value."""
    tx = scale_by_plateau(0.5, 2)
    s = tx.init(None)
    values = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8]
    scales, applied = [], []
    for v in values:
        u, s = tx.update(jnp.ones(()), s, value=v)
        applied.append(float(u))
        scales.append(float(s.scale))
    # 3 bad epochs (> patience 2) after 0.9 -> one reduction at the 5th value.
    assert scales == [1, 1, 1, 1, 0.5, 0.5]
    assert applied == [1, 1, 1, 1, 1, 0.5]
    assert int(s.n_reductions) == 1
    # observe_plateau finds the state inside an optax chain (StABlE's optimizer).
    chain = stable_optimizer(0.1, grad_clip_norm=1.0, plateau_factor=0.5, plateau_patience=2)
    opt = chain.init({"w": jnp.zeros(3)})
    for v in values:
        opt = observe_plateau(opt, v, factor=0.5, patience=2)
    assert float(plateau_of(opt).scale) == 0.5 and int(plateau_of(opt).n_reductions) == 1


def test_stable_optimizer_clips_and_skips_non_finite():
    chain = stable_optimizer(0.1, grad_clip_norm=1.0, plateau_factor=0.5, plateau_patience=2)
    p = {"w": jnp.zeros(2)}
    opt = chain.init(p)
    u, opt = chain.update({"w": jnp.asarray([3.0, 4.0])}, opt, p)
    np.testing.assert_allclose(np.asarray(u["w"]), [-0.06, -0.08], rtol=1e-6)  # norm 5 -> 1
    u, opt = chain.update({"w": jnp.asarray([jnp.nan, 1.0])}, opt, p)
    np.testing.assert_array_equal(np.asarray(u["w"]), [0.0, 0.0])
    assert int(opt[0].total_notfinite) == 1


def test_lj_pretraining_recovers_its_parameters():
    train, val = lj_frames(64, 0), lj_frames(16, 1)
    model = lennard_jones_model(sigma=1.2, epsilon=0.3)
    cfg = PretrainConfig(loss=QMLossConfig(0.5, 0.5), learning_rate=2e-2, batch_size=16,
                         max_epochs=150, warmup_steps=0, early_stopping_patience=None,
                         plateau_patience=10)
    state = PretrainState.create(model, jax.random.PRNGKey(0), train.positions[0], cfg)
    state = pretrain(state, cfg, train, val)
    p = state.best_params
    assert float(p["sigma"]) == pytest.approx(SIGMA, abs=0.01)
    assert float(p["epsilon"]) == pytest.approx(EPS, rel=0.05)
    m = evaluate_qm(model, p, val)
    assert m["force_mae_mev_per_angstrom"] < 20  # forces of order 1 eV/A


def _tiny_schnet(train):
    cfg = SchNetConfig(cutoff_angstrom=3.0, hidden_features=8, n_filters=8, n_interactions=1,
                       n_gaussians=8)
    return make_model(cfg, train.atomic_numbers, energy_shift=float(train.energies.mean() / 8),
                      energy_scale=1.0)


@pytest.mark.slow  # ~11 s (make test-slow)
def test_checkpoint_resume_continues_identically(tmp_path):
    train, val = lj_frames(32, 0), lj_frames(8, 1)
    model = _tiny_schnet(train)
    cfg = PretrainConfig(batch_size=8, max_epochs=4, warmup_steps=3, learning_rate=3e-3)
    fresh = lambda: PretrainState.create(model, jax.random.PRNGKey(1), train.positions[0], cfg)  # noqa: E731

    full = pretrain(fresh(), cfg, train, val, run_dir=tmp_path / "full")
    # "Killed" after 2 epochs, then the same command again with the same run directory.
    cfg2 = PretrainConfig(**{**cfg.__dict__, "max_epochs": 2})
    pretrain(fresh(), cfg2, train, val, run_dir=tmp_path / "cut")
    resumed = pretrain(fresh(), cfg, train, val, run_dir=tmp_path / "cut")

    assert int(resumed.epoch) == 4 and int(resumed.step) == int(full.step)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(full.opt_state), jax.tree.leaves(resumed.opt_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    logs = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logs] == [0, 1, 2, 3]
    ref = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in logs] == [r["val_loss"] for r in ref]
    best = load_best_params(tmp_path / "cut", full.params)
    for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(resumed.best_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _tiny_gemnet(train):
    from stablejax.models import GemNetTConfig

    cfg = GemNetTConfig(cutoff_angstrom=3.0, n_blocks=1, emb_size_atom=8, emb_size_edge=8,
                        emb_size_rbf=4, emb_size_cbf=4, emb_size_trip=4, emb_size_bil_trip=4,
                        num_radial=3, num_spherical=3, num_atom=1, num_after_skip=1)
    return make_model(cfg, train.atomic_numbers, energy_shift=float(train.energies.mean() / 8),
                      energy_scale=1.0, avg_num_neighbors=7.0)


@pytest.mark.parametrize("kind", [pytest.param("schnet", marks=pytest.mark.slow),
                                  pytest.param("gemnet-t", marks=pytest.mark.slow)])
def test_trained_model_conserves_energy_in_nve(x64, kind):
    """Pre-train (SchNet: Adam; GemNet-T: its recipe, AdamW + AMSGrad + L2-MAE forces), then a
    velocity-Verlet NVE run of the trained model conserves the total energy."""
    train, val = lj_frames(32, 0), lj_frames(8, 1)
    if kind == "schnet":
        model = _tiny_schnet(train)
        cfg = PretrainConfig(batch_size=8, max_epochs=5, warmup_steps=0, learning_rate=3e-3,
                             dtype="float64")
    else:
        model = _tiny_gemnet(train)
        cfg = PretrainConfig.gemnet(batch_size=4, max_epochs=3, ema_decay=None,
                                    dtype="float64")
    state = PretrainState.create(model, jax.random.PRNGKey(2), train.positions[0], cfg)
    before = evaluate_qm(model, state.params, val)["force_mae_mev_per_angstrom"]
    state = pretrain(state, cfg, train, val)
    after = evaluate_qm(model, state.best_params, val)["force_mae_mev_per_angstrom"]
    if kind == "gemnet-t":  # its recipe learns from these 12 steps (the tiny SchNet does not)
        assert after < 0.7 * before, (before, after)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), state.best_params)
    f = lambda R: model.energy_fn(params, R)  # noqa: E731
    _, shift = space.free()
    # GemNet-T: 240 steps of 0.25 fs; a briefly trained GemNet-T has no repulsive core yet and
    # its atoms fuse after ~90 fs (forces beyond any step size): the check stays where it is sane
    dt_fs, n_steps = (0.5, 400) if kind == "schnet" else (0.25, 240)
    init, step = simulate.nve(f, shift, dt=dt_fs * FS)
    st = init(jax.random.PRNGKey(0), jnp.asarray(train.positions[0]), mass=39.9, kT=0.02)

    def total(st):
        return f(st.position) + 0.5 * jnp.sum(st.momentum**2 / st.mass)

    e0 = total(st)
    st = jax.jit(lambda s: jax.lax.fori_loop(0, n_steps, lambda i, s: step(s), s))(st)
    R = np.asarray(st.position)
    assert np.linalg.norm(R[:, None] - R[None], axis=-1)[np.triu_indices(8, 1)].min() > 0.5
    ke0 = 0.5 * 8 * 3 * 0.02
    assert abs(float(total(st) - e0)) < 1e-3 * ke0


def test_l2mae_force_loss():
    """``force_loss='l2mae'``: the mean over atoms of the Euclidean norm of the normalised force
    error; 'mse' the mean over components of its square."""
    from stablejax.train.losses import Batch, LossScales, qm_loss

    n_atoms = 3
    err = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])  # norms 5, 0, 3
    forces = jnp.asarray(err[None] * 2.0)  # s_F = 2: normalised errors are ``err``
    batch = Batch(positions=jnp.zeros((1, n_atoms, 3)), energies=jnp.zeros(1),
                  forces=forces, weight=jnp.ones(1), neighbor_idx=None)
    energy_fn = lambda p, R, **kw: jnp.sum(R) * 0.0  # zero energy and forces  # noqa: E731
    scales = LossScales(energy=1.0, force=2.0)
    l2, _ = qm_loss({}, batch, energy_fn=energy_fn, scales=scales,
                    cfg=QMLossConfig(0.0, 1.0, force_loss="l2mae"))
    mse, _ = qm_loss({}, batch, energy_fn=energy_fn, scales=scales, cfg=QMLossConfig(0.0, 1.0))
    assert float(l2) == pytest.approx((5 + 0 + 3) / 3)
    assert float(mse) == pytest.approx(np.sum(err**2) / 9)
    with pytest.raises(ValueError, match="QMLossConfig.force_loss"):
        QMLossConfig(force_loss="l1")


def test_adamw_amsgrad_update():
    """``weight_decay`` + ``amsgrad``: three steps against the update written out (optax's
    AMSGrad, the running maximum of the bias-corrected second moment; decoupled decay)."""
    from stablejax.train.optim import pretrain_optimizer

    lr, wd, b1, b2, eps = 0.1, 0.01, 0.9, 0.999, 1e-8
    tx = pretrain_optimizer(lr, warmup_steps=0, warmup_factor=1.0, grad_clip_norm=None,
                            plateau_factor=0.5, plateau_patience=1, min_learning_rate=0.0,
                            weight_decay=wd, amsgrad=True)
    p = jnp.array([1.0, -2.0])
    state = tx.init(p)
    want, m, v, vmax = np.array([1.0, -2.0]), 0.0, 0.0, 0.0
    for t, g in enumerate(([0.5, 1.0], [-3.0, 0.1], [0.2, 0.2]), start=1):
        upd, state = tx.update(jnp.asarray(g), state, p)
        p = p + upd
        g = np.asarray(g)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        vmax = np.maximum(vmax, v / (1 - b2**t))
        want = want - lr * ((m / (1 - b1**t)) / (np.sqrt(vmax) + eps) + wd * want)
        np.testing.assert_allclose(np.asarray(p), want, rtol=1e-5)


def test_bad_inputs():
    train = lj_frames(4)
    unlabelled = make_frames(train.positions, train.atomic_numbers)
    model = lennard_jones_model()
    cfg = PretrainConfig(max_epochs=1, batch_size=2)
    st = PretrainState.create(model, jax.random.PRNGKey(0), train.positions[0], cfg)
    with pytest.raises(ValueError, match="val frames have no energy/force labels"):
        pretrain(st, cfg, train, unlabelled)
    with pytest.raises(ValueError, match="PretrainConfig.learning_rate"):
        PretrainConfig(learning_rate=-1.0)
