"""sipha: a high-availability SIP proxy for primary/backup SIP server pairs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sipha")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
