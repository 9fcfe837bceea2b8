"""Torch-free deployment of NIR networks onto the ECS accelerator."""

from ecs_deploy.__about__ import __version__

__all__ = ["__version__"]
