"""Corpus and intrinsic features: pure DataFrame -> DataFrame functions and their numpy/Arrow kernels."""
