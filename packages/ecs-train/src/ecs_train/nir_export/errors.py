"""Exceptions raised while exporting a network to a NIR file."""

from __future__ import annotations

from ecs_common.errors import ECSError


class ExportError(ECSError, ValueError):
    """A network cannot be exported to a NIR file that ecs-deploy accepts."""


class UnsupportedModuleError(ExportError):
    """A layer has no NIR converter, or uses an option that its converter cannot represent.

    ``path`` is the layer's position in the network (as in ``named_modules``)
    and ``module_type`` its qualified class name.
    """

    def __init__(self, message: str, *, path: str, module_type: str) -> None:
        super().__init__(message)
        self.path = path
        self.module_type = module_type


class NIRFileExistsError(ExportError, FileExistsError):
    """The output NIR file exists and overwriting was not requested."""
