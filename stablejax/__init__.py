"""stablejax: StABlE training (Stability-Aware Boltzmann Estimator) of ML interatomic potentials
in JAX and JAX-MD.

Units everywhere: eV, Angstrom, fs, K, amu (kT in eV).
"""

__version__ = "0.1.0"
