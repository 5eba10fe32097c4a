"""A synthetic video world with known content: scenes of shapes, colours, backgrounds and motions,
their captions, rendered videos, and held-out seeds for honest evaluation."""

from .world import *  # noqa: F403  (the public names of the world module)
from .world import __all__  # noqa: F401
