"""The NVIDIA stack of this machine: tensorrt and cuda-python, imported on demand, and its GPUs.

:func:`import_tensorrt` and :func:`import_cudart` import the libraries with an error
that says how to install them; :func:`device_properties` reads a GPU's name and
compute capability; :func:`tensorrt_available` says why the TensorRT backend cannot
run here (or None), without raising, for the ``auto`` backend; :func:`cuda_call`
unwraps a cuda-python call's ``(error, value)`` result.

Used by the TensorRT backend (:mod:`temtrack.sdk.backends.tensorrt`), the ``auto``
backend and the engine build (:mod:`temtrack.export.tensorrt`). Nothing is imported
when this module is imported; never torch.
"""

from __future__ import annotations

__all__ = [
    "INSTALL_HINT",
    "MIN_TENSORRT_MAJOR",
    "cuda_call",
    "device_properties",
    "import_cudart",
    "import_tensorrt",
    "tensorrt_available",
]

MIN_TENSORRT_MAJOR = 10
INSTALL_HINT = (
    "pip install 'tem-track[gpu]' (or: pip install tensorrt cuda-python); "
    "TensorRT needs an NVIDIA GPU with its driver"
)


def import_tensorrt():
    """The ``tensorrt`` module.

    Raises
    ------
    ModuleNotFoundError
        tensorrt is not installed (the message says how to install it).
    ImportError
        tensorrt is installed but cannot be loaded (e.g. its CUDA libraries are
        missing), or is older than TensorRT 10.
    """
    try:
        import tensorrt
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "tensorrt":
            raise ModuleNotFoundError(
                f"the TensorRT backend needs the tensorrt package, which is not installed: {INSTALL_HINT}",
                name="tensorrt",
            ) from None
        raise
    except ImportError as exc:
        raise ImportError(
            f"tensorrt is installed but cannot be loaded ({exc}); check the NVIDIA driver and that the "
            "TensorRT and CUDA libraries match (pip install 'tem-track[gpu]' installs a matching set)"
        ) from exc
    version = str(getattr(tensorrt, "__version__", "0"))
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < MIN_TENSORRT_MAJOR:
        # TensorRT 8 builds implicit-batch networks from create_network(0) and lacks
        # parts of the tensor API used here.
        raise ImportError(
            f"tem-track needs TensorRT >= {MIN_TENSORRT_MAJOR}, found {version}: pip install -U 'tem-track[gpu]'"
        )
    return tensorrt


def import_cudart():
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart``
    before cuda-python 12.6).

    Raises
    ------
    ModuleNotFoundError
        cuda-python is not installed (the message says how to install it).
    """
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise ModuleNotFoundError(
                f"the TensorRT backend needs cuda-python (module cuda.bindings), which is not installed: {INSTALL_HINT}",
                name="cuda",
            ) from None
    return runtime


def device_properties(device: int = 0) -> tuple[str, str]:
    """The name and compute capability of a CUDA device.

    Parameters
    ----------
    device : int
        CUDA device index.

    Returns
    -------
    name : str
        e.g. ``"NVIDIA H100 80GB HBM3"``.
    compute_capability : str
        ``"major.minor"``, e.g. ``"9.0"``.

    Raises
    ------
    ModuleNotFoundError
        cuda-python is not installed.
    RuntimeError
        No such device, or no usable CUDA driver (the CUDA error is named).
    """
    cudart = import_cudart()
    prop = cuda_call(cudart, cudart.cudaGetDeviceProperties(device), f"reading the properties of CUDA device {device}")
    name = prop.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), f"{prop.major}.{prop.minor}"


def tensorrt_available(device: int = 0) -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can.

    For choosing a backend automatically: never raises for a missing package or GPU.

    Parameters
    ----------
    device : int
        CUDA device index to look for.

    Returns
    -------
    str or None
        None when tensorrt and cuda-python import and CUDA device ``device`` exists;
        else the reason, e.g. ``"tensorrt is not installed (pip install ...)"``.
    """
    try:
        import_tensorrt()
    except ImportError as exc:  # ModuleNotFoundError included
        return f"tensorrt is not usable: {exc}"
    try:
        cudart = import_cudart()
    except ImportError as exc:
        return f"cuda-python is not usable: {exc}"
    try:
        count = cuda_call(cudart, cudart.cudaGetDeviceCount(), "counting CUDA devices")
    except RuntimeError as exc:
        return f"no usable CUDA device: {exc}"
    if not isinstance(device, int) or not 0 <= device < count:
        return f"no CUDA device {device!r} (this machine has {count})"
    return None


def cuda_call(cudart, result, what: str):
    """The value(s) of a cuda-python call ``(err, *values)``; RuntimeError on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            _, text = cudart.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
        except (AttributeError, TypeError, ValueError):
            text = ""
        name = getattr(err, "name", str(err))
        raise RuntimeError(f"CUDA error while {what}: {name}" + (f" ({text})" if text else ""))
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)

