"""Files: atomic writes, HDF5 stores, checkpoints."""
