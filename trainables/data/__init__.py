"""Detector events in HDF5: the schema, a lazy reader, the synthetic LArTPC generator, inspect and import."""

from trainables.data.h5dataset import H5Events, make_loader
from trainables.data.schema import EventFile, class_counts, data_hash, hash_split, open_events, read_truth
from trainables.data.synth import write_synthetic

__all__ = ["EventFile", "H5Events", "class_counts", "data_hash", "hash_split", "make_loader", "open_events",
           "read_truth", "write_synthetic"]
