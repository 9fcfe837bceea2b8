"""Nox sessions: lint, type check, tests per package, deploy-only and packaging checks, benchmarks.

Sessions that need torch share one virtual environment instead of installing
the 5.5 GB CUDA build of torch once per session. It is the environment named
by ``ECS_VENV`` (default: ``.venv`` in the repository root), and
``scripts/setup-venv.sh`` creates it when it is missing. The ``lint``,
``deploy_only`` and ``build`` sessions never need torch and get their own
small environments, so that they prove what a user without torch gets.

    nox                          # every session except bench
    nox -s "tests(package='deploy')"
    ECS_VENV=/path/to/venv nox -s typecheck
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
SHARED_VENV = Path(os.environ.get("ECS_VENV", ROOT / ".venv")).resolve()

PACKAGES = {"common": "ecs-common", "train": "ecs-train", "deploy": "ecs-deploy"}
MODULES = {"common": "ecs_common", "train": "ecs_train", "deploy": "ecs_deploy"}
SOURCE_DIRS = [str(ROOT / "packages" / name / "src") for name in PACKAGES.values()]

# pytest exits with 5 when it collects no tests, as in a package that has none yet.
PYTEST_SUCCESS = [0, 5]

# Modules the deploy side must never load.
HEAVY_MODULES = ("torch", "nirtorch", "norse")

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True


def shared_python(session: nox.Session) -> str:
    """Return the interpreter of the shared environment, creating the environment if it is missing."""
    python = SHARED_VENV / "bin" / "python"
    if not python.exists():
        session.log(f"Shared environment {SHARED_VENV} is missing; creating it with scripts/setup-venv.sh")
        session.run("bash", str(ROOT / "scripts" / "setup-venv.sh"), str(SHARED_VENV), external=True)
    return str(python)


def fresh_venv(session: nox.Session, name: str, *options: str) -> Path:
    """Create an empty virtual environment under the session's temporary folder and return its folder."""
    venv = Path(session.create_tmp()).resolve() / name
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", *options, str(venv))
    return venv


def assert_torch_free(session: nox.Session, python: str) -> None:
    """Fail unless ``import ecs_deploy`` in ``python`` leaves torch, nirtorch and norse unloaded."""
    check = (
        "import sys, ecs_deploy; "
        f"loaded = [name for name in {HEAVY_MODULES!r} if name in sys.modules]; "
        "assert not loaded, f'import ecs_deploy loaded {loaded}'"
    )
    session.run(python, "-c", check, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """Run ruff and the import-linter contracts that keep ecs-deploy torch-free."""
    session.install("ruff", "import-linter")

    # import-linter reads the sources, so the packages need not be installed.
    session.run("lint-imports", env={"PYTHONPATH": os.pathsep.join(SOURCE_DIRS)})

    session.run("ruff", "check", ".")


@nox.session(venv_backend="none")
def typecheck(session: nox.Session) -> None:
    """Run mypy on the sources of the three packages in the shared environment."""
    python = shared_python(session)

    session.run(python, "-m", "mypy", *[f"-p={module}" for module in MODULES.values()], external=True)


@nox.session(venv_backend="none")
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests in the shared environment."""
    python = shared_python(session)

    session.run(
        python,
        "-m",
        "pytest",
        f"tests/{MODULES[package]}",
        *session.posargs,
        external=True,
        success_codes=PYTEST_SUCCESS,
    )


@nox.session(venv_backend="none")
def e2e(session: nox.Session) -> None:
    """Run the end-to-end tests (train, export, deploy) in the shared environment."""
    python = shared_python(session)

    session.run(python, "-m", "pytest", "tests/e2e", *session.posargs, external=True, success_codes=PYTEST_SUCCESS)


@nox.session(reuse_venv=False)
def deploy_only(session: nox.Session) -> None:
    """Install only ecs-common and ecs-deploy, run their tests and prove torch is never imported."""
    session.install("packages/ecs-common[test]", "packages/ecs-deploy[test]", "pytest", "hypothesis")

    session.run(
        "python",
        "-c",
        "import importlib.util, sys; "
        f"found = [name for name in {HEAVY_MODULES!r} if importlib.util.find_spec(name)]; "
        "sys.exit(f'installing ecs-common and ecs-deploy pulled in {found}' if found else 0)",
    )
    assert_torch_free(session, "python")

    session.run("python", "-m", "pytest", "tests/ecs_common", "tests/ecs_deploy", *session.posargs)


@nox.session(reuse_venv=False)
def build(session: nox.Session) -> None:
    """Build each package's wheel and sdist and install the wheels into fresh environments."""
    session.install("build")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)

    for name in PACKAGES.values():
        session.run("python", "-m", "build", "--outdir", str(dist), f"packages/{name}")

    wheels = {key: str(next(dist.glob(f"{MODULES[key]}-*.whl"))) for key in PACKAGES}
    for key in PACKAGES:
        sdists = list(dist.glob(f"{MODULES[key]}-*.tar.gz"))
        if not sdists:
            session.error(f"python -m build wrote no sdist of {PACKAGES[key]} to {dist}")

    # ecs-common and ecs-deploy alone: every module must import, and torch must stay out.
    deploy_venv = fresh_venv(session, "deploy-wheels")
    deploy_python = str(deploy_venv / "bin" / "python")
    session.run(deploy_python, "-m", "pip", "install", wheels["common"], wheels["deploy"], external=True)
    session.run(deploy_python, "-c", IMPORT_ALL_MODULES, "ecs_common", "ecs_deploy", str(deploy_venv), external=True)
    assert_torch_free(session, deploy_python)

    # ecs-train needs torch. Rather than install torch again, the fresh
    # environment imports the shared environment's packages through a .pth
    # file, and the two wheels are installed in front of them without dependencies.
    shared = shared_python(session)
    train_venv = fresh_venv(session, "train-wheels")
    train_python = str(train_venv / "bin" / "python")
    link_site_packages(session, train_python, shared)
    session.run(
        train_python,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--force-reinstall",
        wheels["common"],
        wheels["train"],
        external=True,
    )
    session.run(train_python, "-m", "pip", "install", "--dry-run", wheels["common"], wheels["train"], external=True)
    session.run(train_python, "-c", IMPORT_ALL_MODULES, "ecs_train", str(train_venv), external=True)


def link_site_packages(session: nox.Session, python: str, shared_python_path: str) -> None:
    """Make ``python`` see the shared environment's site-packages, after its own, through a .pth file."""
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    shared_site = session.run(shared_python_path, "-c", query, external=True, silent=True)
    own_site = session.run(python, "-c", query, external=True, silent=True)
    assert isinstance(shared_site, str) and isinstance(own_site, str)

    (Path(own_site.strip()) / "_ecs_shared_env.pth").write_text(shared_site.strip() + "\n")


# Imports every module of the packages named in argv[1:-1] and checks that each
# was loaded from the environment in argv[-1], not from the source checkout.
IMPORT_ALL_MODULES = """
import importlib, pkgutil, sys
packages, prefix = sys.argv[1:-1], sys.argv[-1]
for name in packages:
    package = importlib.import_module(name)
    if not package.__file__.startswith(prefix):
        sys.exit(f"{name} was imported from {package.__file__}, not from the installed wheel in {prefix}")
    modules = [info.name for info in pkgutil.walk_packages(package.__path__, name + ".")]
    for module in modules:
        importlib.import_module(module)
    print(f"{name}: imported {len(modules) + 1} modules from {package.__path__[0]}")
"""


@nox.session(venv_backend="none", default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks (benchmarks/run_all.py) in the shared environment, outside the default run."""
    script = ROOT / "benchmarks" / "run_all.py"
    if not script.exists():
        session.skip(f"{script.relative_to(ROOT)} does not exist yet")
    python = shared_python(session)

    session.run(python, str(script), *session.posargs, external=True)
