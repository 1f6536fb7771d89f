"""tem-track: dislocations in in-situ TEM videos as tracked splines and time series.

This module stays cheap to import (``tem-track --version`` must be instant): the
user-facing names are resolved lazily on first access.
"""

__version__ = "0.1.0"

_LAZY = {
    "Analyzer": "temtrack.sdk.analyzer",
    "process_videos": "temtrack.sdk.analyzer",
    "open_source": "temtrack.sdk.sources",
    "generate_sample": "temtrack.training.synth",
    "iter_video": "temtrack.training.synth",
    "write_video": "temtrack.training.synth",
    "get_preset": "temtrack.training.synth",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'temtrack' has no attribute {name!r}")
