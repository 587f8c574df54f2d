"""ferry: an integration engine that moves business records between systems without losing or duplicating them."""

__version__ = "0.1.0"
