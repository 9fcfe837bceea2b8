"""Exceptions raised by ecs-deploy, one type per kind of failure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ecs_common.errors import ConfigError, ECSError, MetadataError, QuantizationError, ResourceError

if TYPE_CHECKING:
    from ecs_deploy.transfer import RemoteVerification

__all__ = [
    "AuthenticationError",
    "BundleError",
    "BundleExistsError",
    "BundleFormatError",
    "BundleVerificationError",
    "ConfigError",
    "DeployError",
    "GraphError",
    "HostKeyError",
    "HostUnreachableError",
    "InputError",
    "MemFileError",
    "MemFileIntegrityError",
    "MetadataError",
    "MissingConfigError",
    "NIRFileError",
    "OutputExistsError",
    "OutputFolderError",
    "QuantizationError",
    "RemoteChecksumError",
    "RemoteCommandError",
    "RemoteDestinationError",
    "ResourceError",
    "ShapeMismatchError",
    "TransferError",
    "UnsupportedNodeError",
]


class DeployError(ECSError):
    """Base class of the errors ecs-deploy raises on purpose."""


class NIRFileError(DeployError, OSError):
    """A NIR file is missing, unreadable, truncated or not a valid NIR graph."""


class GraphError(DeployError, ValueError):
    """A NIR graph is readable but cannot be mapped onto the accelerator."""


class UnsupportedNodeError(GraphError):
    """A NIR graph contains a node type that the accelerator does not implement."""


class ShapeMismatchError(GraphError):
    """The shapes at the two ends of an edge of a NIR graph disagree."""


class MissingConfigError(DeployError, ConfigError):
    """A NIR file carries no ``ecs`` metadata and no configuration was given in its place."""


class InputError(DeployError, ValueError):
    """Input samples or events do not match the network's input layer."""


class MemFileError(DeployError, ValueError):
    """A memory-file set is incomplete, malformed or inconsistent with its manifest."""


class MemFileIntegrityError(MemFileError):
    """A memory file's sha256 differs from the one its manifest records."""


class OutputExistsError(DeployError, FileExistsError):
    """An output file exists already and overwriting it was not requested."""


class OutputFolderError(DeployError, OSError):
    """An output folder cannot be created or written to."""


class BundleError(DeployError):
    """A deployment bundle cannot be created or read."""


class BundleExistsError(BundleError, OutputExistsError):
    """The bundle's output path exists and ``force`` was not given."""


class BundleFormatError(BundleError, ValueError):
    """A bundle's MANIFEST.json or SHA256SUMS is missing, malformed or of an unsupported version."""


class BundleVerificationError(BundleError):
    """A bundle's files do not match its MANIFEST.json or SHA256SUMS.

    The file names, relative to the bundle root, are kept as attributes.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        extra: Sequence[str] = (),
        mismatched: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.extra = tuple(extra)
        self.mismatched = tuple(mismatched)


class TransferError(DeployError):
    """Copying a bundle to the FPGA host, or checking it there, failed."""


class HostUnreachableError(TransferError, ConnectionError):
    """No SSH connection could be opened: refused, timed out, no route, unknown host name or closed early.

    ``reason`` is one of ``refused``, ``timed out``, ``unreachable``, ``unresolved`` and ``closed``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class HostKeyError(TransferError):
    """The host key of the FPGA host is unknown, or differs from the stored one (``changed`` is then true)."""

    def __init__(self, message: str, *, changed: bool) -> None:
        super().__init__(message)
        self.changed = changed


class AuthenticationError(TransferError, PermissionError):
    """The FPGA host rejected the user's key."""


class RemoteDestinationError(TransferError):
    """The destination folder on the FPGA host cannot be created, exists already, or was not found."""


class RemoteCommandError(TransferError):
    """A command on the FPGA host (tar, sha256sum, mv) is missing or failed."""


class RemoteChecksumError(TransferError):
    """Files on the FPGA host do not match the bundle's SHA256SUMS, and ``verification`` names them."""

    def __init__(self, message: str, *, verification: RemoteVerification) -> None:
        super().__init__(message)
        self.verification = verification
