"""Data fixtures: tiny HDF5 files written by the tests."""
