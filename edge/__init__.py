"""Work-center edge gateway."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("edge-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
