"""Version of the ecs-common distribution."""

__version__ = "0.1.0"
