"""The QM loss in each model's reference units (SchNet raw eV, NequIP over the force RMS,
GemNet-T std-normalised), against values computed by hand."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from stablejax.data.frames import make_frames
from stablejax.train import PretrainConfig, TrainConfig
from stablejax.train.losses import QMLossConfig, loss_scales, make_batches, qm_loss

A = 0.3  # energy_fn(params, R) = a * sum(R^2): forces -2 a R


def energy_fn(params, R):
    return params["a"] * jnp.sum(R**2)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    R = rng.normal(size=(3, 4, 3))
    E = np.array([1.0, -0.5, 2.5]) + A * (R**2).sum(axis=(1, 2))  # errors -1, 0.5, -2.5 eV
    F = -2 * A * R + rng.normal(size=R.shape) * 0.4
    return make_frames(R, [1, 6, 8, 1], energies=E, forces=F)


def loss_of(frames, cfg):
    batch = make_batches(frames, 4, dtype=jnp.float64)[0]  # 3 frames + 1 padding frame
    loss, _ = qm_loss({"a": jnp.float64(A)}, batch, energy_fn=energy_fn, cfg=cfg,
                      scales=loss_scales(frames, cfg))
    return float(loss)


def errors(frames):
    R, E, F = frames.positions, frames.energies, frames.forces
    return A * (R**2).sum(axis=(1, 2)) - E, -2 * A * R - F  # dE [3], dF [3, 4, 3]


@pytest.mark.usefixtures("x64")
def test_schnet_loss_is_raw_ev(frames):
    cfg = PretrainConfig.schnet().loss
    assert cfg == TrainConfig.aspirin().optimizer.qm_loss == TrainConfig.molecule(
        500.0, 0.5).optimizer.qm_loss
    dE, dF = errors(frames)
    # 0.05 MSE(E) + 0.95 MSE(F) in eV and eV/Angstrom: (1 + 0.25 + 6.25) / 3 = 2.5 eV^2
    want = 0.05 * np.mean(dE**2) + 0.95 * np.mean(dF**2)
    assert np.mean(dE**2) == pytest.approx(2.5)
    assert loss_of(frames, cfg) == pytest.approx(want, rel=1e-12)


@pytest.mark.usefixtures("x64")
def test_nequip_loss_is_per_atom_over_force_rms(frames):
    cfg = PretrainConfig.nequip().loss
    assert cfg == TrainConfig.ac_ala3_nhme().optimizer.qm_loss
    dE, dF = errors(frames)
    s = np.sqrt(np.mean(frames.forces**2))
    want = 1.0 * np.mean((dE / 4 / s) ** 2) + 1000.0 * np.mean((dF / s) ** 2)
    assert loss_of(frames, cfg) == pytest.approx(want, rel=1e-12)


@pytest.mark.usefixtures("x64")
def test_gemnet_loss_is_std_normalised_l2mae(frames):
    cfg = PretrainConfig.gemnet().loss
    assert cfg == TrainConfig.water().optimizer.qm_loss
    dE, dF = errors(frames)
    s_e, s_f = np.std(frames.energies), np.sqrt(np.mean(frames.forces**2))
    want = 0.001 * np.mean((dE / s_e) ** 2) + 0.999 * np.mean(
        np.linalg.norm(dF, axis=-1) / s_f)
    assert loss_of(frames, cfg) == pytest.approx(want, rel=1e-12)


def test_unknown_normalization_is_a_one_line_error():
    with pytest.raises(ValueError, match="QMLossConfig.normalization must be one of raw, "
                                         "force_rms, std, got 'rms'"):
        QMLossConfig(normalization="rms")
