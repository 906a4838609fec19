"""Data: frames pytree, splits, built-in systems, offline GFN2-xTB reference generation (built-in
or the user's molecules) and import of the user's labelled trajectories."""

from stablejax.data.frames import Frames, Splits, concatenate, make_frames, random_split
from stablejax.data.systems import System, get_molecule, make_system
from stablejax.data.topology import bond_lengths, bonds_from_structure
from stablejax.data.dataset import Dataset, dataset_info, load_dataset
from stablejax.data.generate import GenerationConfig, generate_dataset, scale_config
from stablejax.data.importer import ImportConfig, import_dataset
from stablejax.data.molecule import MoleculeStructure, read_structure_file
from stablejax.data.paths import resolve_data_dir

__all__ = [
    "Dataset", "Frames", "GenerationConfig", "ImportConfig", "MoleculeStructure", "Splits",
    "System", "bond_lengths", "bonds_from_structure", "concatenate", "dataset_info",
    "generate_dataset", "get_molecule", "import_dataset", "load_dataset", "make_frames",
    "make_system", "random_split", "read_structure_file", "resolve_data_dir", "scale_config",
]
