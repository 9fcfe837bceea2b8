"""``ecs-deploy bundle`` and ``ecs-deploy verify-bundle``: pack a deployment for the lab and check a copy of it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ecs_deploy.bundle import create_bundle, verify_bundle
from ecs_deploy.cli import app
from ecs_deploy.commands._shared import cli_errors

logger = logging.getLogger(__name__)


@app.command("bundle")
def bundle_command(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Folders and files to pack: memory-file folders, test-vector folders or files. "
            "Each folder is stored under its own name.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Bundle folder to write, or a .tar.gz/.tgz file with --archive."),
    ],
    nir: Annotated[
        Path | None,
        typer.Option("--nir", help="NIR file of the network, stored at the bundle root."),
    ] = None,
    archive: Annotated[
        bool,
        typer.Option("--archive", help="Write one gzip-compressed tar file instead of a folder."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing bundle at --out."),
    ] = False,
) -> None:
    """Pack memory files, test vectors and the NIR file into one checksummed bundle for the lab.

    Exits with 2 when a source is missing, the output exists without --force, or writing fails.
    """
    with cli_errors():
        path = create_bundle(sources, out, nir_path=nir, archive=archive, force=force)
        result = verify_bundle(path)

    typer.echo(
        f"Wrote bundle {path}: {len(result.files)} files ({result.total_bytes} bytes) listed in MANIFEST.json, "
        f"checksums verified."
    )


@app.command("verify-bundle")
def verify_bundle_command(
    bundle: Annotated[
        Path,
        typer.Argument(help="Bundle folder or .tar.gz/.tgz archive to check.", show_default=False),
    ],
) -> None:
    """Re-hash every file of a bundle and report missing, extra or changed files.

    Exits with 2 when the bundle is missing, malformed or fails verification.
    """
    with cli_errors():
        result = verify_bundle(bundle)

    typer.echo(f"Bundle {bundle} verified: {len(result.files)} files, {result.total_bytes} bytes match MANIFEST.json.")
