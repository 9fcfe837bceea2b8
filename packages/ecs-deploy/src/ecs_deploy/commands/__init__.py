"""Subcommands of the ``ecs-deploy`` command line, one module each."""
