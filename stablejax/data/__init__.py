"""Data: frames pytree, splits, built-in systems and offline GFN2-xTB reference generation."""

from stablejax.data.frames import Frames, Splits, concatenate, make_frames, random_split
from stablejax.data.systems import System, get_molecule, make_system
from stablejax.data.topology import bond_lengths, bonds_from_structure
from stablejax.data.dataset import Dataset, dataset_info, load_dataset
from stablejax.data.generate import GenerationConfig, generate_dataset, scale_config
from stablejax.data.paths import resolve_data_dir

__all__ = [
    "Dataset", "Frames", "GenerationConfig", "Splits", "System", "bond_lengths",
    "bonds_from_structure", "concatenate", "dataset_info", "generate_dataset", "get_molecule",
    "load_dataset", "make_frames", "make_system", "random_split", "resolve_data_dir",
    "scale_config",
]
