"""Readers and writers: npz (sGDML/MD17/MD22 and stablejax), extxyz and ASE formats."""

from stablejax.io.ase_io import read_ase, read_frames, write_extxyz
from stablejax.io.npz import read_metadata, read_npz, write_npz

__all__ = ["read_ase", "read_frames", "read_metadata", "read_npz", "write_extxyz", "write_npz"]
