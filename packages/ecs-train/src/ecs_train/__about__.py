"""Version of the ecs-train distribution."""

__version__ = "0.1.0"
