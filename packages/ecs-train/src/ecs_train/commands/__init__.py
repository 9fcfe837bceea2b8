"""Subcommands of the ``ecs-train`` command line, one module each."""
