"""Version of the ecs-deploy distribution."""

__version__ = "0.1.0"
