"""kubepay: payments the Kubernetes way."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kubepay")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
