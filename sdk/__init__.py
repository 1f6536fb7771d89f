"""The lightweight runtime of tem-track.

Must never import torch; heavy optional libraries (onnxruntime, av, tensorrt) are
imported lazily where they are used.
"""
