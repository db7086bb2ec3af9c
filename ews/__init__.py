"""Core of the early-warning system: configuration, registries, shared models, storage, CLI."""

__version__ = "0.1.0"
