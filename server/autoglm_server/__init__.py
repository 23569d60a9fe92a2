"""autoglm-serve: a gRPC daemon that streams tokens from a continuous-batching engine."""

from importlib import metadata

try:
    __version__ = metadata.version("autoglm-server")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
