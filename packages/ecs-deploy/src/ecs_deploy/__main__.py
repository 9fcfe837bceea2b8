"""Entry point of ``python -m ecs_deploy``, the same command line as ``ecs-deploy``."""

from ecs_deploy.cli import main

if __name__ == "__main__":
    main()
