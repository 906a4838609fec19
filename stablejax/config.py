"""Configuration shared by every stage: the simulation settings (:class:`MDConfig`), the h(r)
observable (:class:`HRConfig`), and the machinery of all stablejax configs (frozen dataclasses,
validated at construction, nested, JSON round trip, overrides by nested dict).

One quantity has one name, with its unit, everywhere: a config key, a JSON key and a command-line
flag (``--train.md.dt-fs``) are the same field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
import warnings
from typing import Any, Literal

INTEGRATORS: tuple[str, ...] = ("nose_hoover", "langevin", "nve")  # MDConfig and the simulator


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits a config field annotation (int/float/bool/str, Literal, dataclass,
    ``X | None``, tuple); other annotations are not checked."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple or tp is tuple:
        return isinstance(value, tuple)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return True


def check_types(obj: Any) -> None:
    """Raise ``ValueError("<Class>.<field> must be <type>, got <value>")`` for a field whose value
    does not fit its annotation (e.g. ``"four"`` or ``2.7`` for an int), before any rule is
    evaluated. Numbers must be finite (no NaN or inf), and a ``seed`` a non-negative integer."""
    for name, tp in typing.get_type_hints(type(obj)).items():
        if name.startswith("_") or name not in {f.name for f in dataclasses.fields(obj)}:
            continue
        value = getattr(obj, name)
        if not _type_ok(value, tp):
            if typing.get_origin(tp) is Literal:
                shown = "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
            else:
                shown = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
            raise ValueError(f"{type(obj).__name__}.{name} must be {shown}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{type(obj).__name__}.{name} must be finite, got {value!r}")
        if name == "seed" and isinstance(value, int) and not 0 <= value < 2**63:
            raise ValueError(f"{type(obj).__name__}.seed must be in [0, 2**63), got {value!r}")


def need(obj: Any, field: str, ok: bool, rule: str) -> None:
    """Raise ``ValueError("<Class>.<field> must be <rule>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{type(obj).__name__}.{field} must be {rule}, got "
                         f"{getattr(obj, field)!r}")


@dataclasses.dataclass(frozen=True)
class MDConfig:
    """One replica simulation: the thermostat, time step, frames and stability tolerance.

    Shared by StABlE training (``TrainConfig.md``), evaluation (``EvalConfig.md``) and the
    ``simulate`` / ``evaluate`` commands.

    Attributes:
      integrator: 'nose_hoover' (JAX-MD Nose-Hoover chain), 'langevin' (JAX-MD BAOAB) or 'nve'.
      temperature_k: thermostat temperature, K.
      dt_fs: time step, fs.
      gamma_per_ps: Langevin friction, 1/ps.
      nh_tau_steps: Nose-Hoover period in steps (tau = nh_tau_steps * dt; the reference's 20).
      frame_interval_fs: time between recorded frames, fs (a multiple of ``dt_fs``); the
        stability criterion is checked on every frame.
      tolerance_angstrom: a replica is unstable once a bond deviates from its reference length
        by more than this (0.25 A in training, 0.5 A in evaluation).
    """

    integrator: Literal["nose_hoover", "langevin", "nve"] = "nose_hoover"
    temperature_k: float = 500.0
    dt_fs: float = 0.5
    gamma_per_ps: float = 0.1
    nh_tau_steps: float = 20.0
    frame_interval_fs: float = 50.0
    tolerance_angstrom: float = 0.25

    def __post_init__(self):
        check_types(self)
        need(self, "integrator", self.integrator in INTEGRATORS, f"one of {INTEGRATORS}")
        need(self, "temperature_k", self.temperature_k > 0, "> 0")
        need(self, "dt_fs", self.dt_fs > 0, "> 0")
        need(self, "gamma_per_ps", self.gamma_per_ps > 0, "> 0")
        need(self, "nh_tau_steps", self.nh_tau_steps > 0, "> 0")
        need(self, "tolerance_angstrom", self.tolerance_angstrom > 0, "> 0")
        if self.temperature_k > 10_000:
            warnings.warn(f"MDConfig.temperature_k={self.temperature_k} is above 10,000 K: "
                          "molecules dissociate; did you mean another unit?", stacklevel=3)
        if self.dt_fs > 5:
            warnings.warn(f"MDConfig.dt_fs={self.dt_fs} is above 5 fs: too long for molecules "
                          "(bonds to hydrogen vibrate with a ~10 fs period; 0.5-1 fs is usual)",
                          stacklevel=3)
        ratio = self.frame_interval_fs / self.dt_fs
        need(self, "frame_interval_fs", ratio >= 1 - 1e-9 and abs(ratio - round(ratio)) < 1e-9,
             f"a positive multiple of dt_fs={self.dt_fs}")

    @property
    def n_dump(self) -> int:
        """MD steps between recorded frames."""
        return int(round(self.frame_interval_fs / self.dt_fs))

    def steps(self, time_ps: float) -> int:
        """MD steps in ``time_ps`` picoseconds (rounded to the nearest step)."""
        return int(round(time_ps * 1000.0 / self.dt_fs))


@dataclasses.dataclass(frozen=True)
class HRConfig:
    """The interatomic distance distribution h(r) (bins over (0, r_max], Gaussian smearing).

    Attributes:
      r_max_angstrom: range (10 A aspirin, 15 A Ac-Ala3-NHMe).
      dr_angstrom: bin width.
      sigma_angstrom: Gaussian smearing width (applied to simulated and reference frames).
    """

    r_max_angstrom: float = 10.0
    dr_angstrom: float = 0.02
    sigma_angstrom: float = 0.01

    def __post_init__(self):
        check_types(self)
        for f in ("r_max_angstrom", "dr_angstrom", "sigma_angstrom"):
            need(self, f, getattr(self, f) > 0, "> 0")
        need(self, "dr_angstrom", self.dr_angstrom < self.r_max_angstrom, "< r_max_angstrom")

    def kwargs(self) -> dict:
        """Keyword arguments of ``stablejax.observables.distance_distribution``."""
        return dict(r_max=self.r_max_angstrom, dr=self.dr_angstrom, sigma=self.sigma_angstrom)


# ------------------------------------------------------------------ nested dataclass machinery


def to_dict(cfg: Any) -> dict:
    """A config as a JSON-ready nested dict."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=1)


def _field_types(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass in a field's type (``X`` or ``X | None``), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def from_dict(cls: type, data: dict, *, path: str | None = None) -> Any:
    """Build ``cls`` from a nested dict (the inverse of :func:`to_dict`).

    Raises:
      ValueError: an unknown key (named with its path), or a value the config rejects.
    """
    return replace(cls(), data, path=path or cls.__name__)


def replace(cfg: Any, overrides: dict, *, path: str | None = None) -> Any:
    """``cfg`` with the fields of a nested dict replaced (nested configs merged, not replaced).

    ``replace(train_cfg, {"optimizer": {"learning_rate": 3e-3}, "n_epochs": 80})``

    Raises:
      ValueError: an unknown key (named with its full path, and the known keys), or a value
        the config rejects (its own message).
    """
    path = path or type(cfg).__name__
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: expected a JSON object of fields, got {overrides!r}")
    types = _field_types(type(cfg))
    known = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in overrides.items():
        if key not in known:
            shown = key if isinstance(key, str) and key.isidentifier() else repr(key)
            raise ValueError(f"{path}.{shown} is not a field (fields: {', '.join(known)})")
        sub = _dataclass_of(types[key])
        current = getattr(cfg, key)
        if sub is not None and isinstance(value, dict):
            base = current if dataclasses.is_dataclass(current) else sub()
            value = replace(base, value, path=f"{path}.{key}")
        elif sub is not None and value is not None and not isinstance(value, sub):
            raise ValueError(f"{path}.{key}: expected a JSON object of {sub.__name__} fields, "
                             f"got {value!r}")
        changes[key] = value
    return dataclasses.replace(cfg, **changes)
