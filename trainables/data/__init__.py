"""Detector events in HDF5: the schema, a lazy reader, the synthetic LArTPC generator, inspect and import."""
