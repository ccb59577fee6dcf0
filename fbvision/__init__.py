"""fbvision: many cameras, one GPU - a Redis-joined pipeline that watches horses in their stalls."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fbvision")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
