"""imgq: self-hosted asynchronous image processing."""

__version__ = "0.1.0"
