"""Synthetic data, models and training.

``temtrack.training.synth`` (the generator) needs only numpy, scipy and OpenCV; the
rest of this package needs torch and imports it only in the modules that use it.
"""
