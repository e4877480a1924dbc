"""microgesture: real-time micro-gesture recognition for live video."""

__version__ = "0.1.0"
