"""Training, quantization, constraint checks, pruning and NIR export for the ECS accelerator."""

from ecs_train.__about__ import __version__

__all__ = ["__version__"]
