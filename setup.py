"""The folders schemas/, producers/ and workers/ install as one `riverrun` namespace.

Every folder under them is found, so a new subpackage cannot go missing from the wheel;
everything else (metadata, dependencies, entry points) is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

FOLDERS = ("schemas", "producers", "workers")

setup(
    package_dir={f"riverrun.{folder}": folder for folder in FOLDERS},
    packages=[
        f"riverrun.{package}"
        # Namespace discovery, so that data folders (schemas/jsonschema) are packages too.
        for package in find_namespace_packages(
            include=[f"{folder}*" for folder in FOLDERS], exclude=["*__pycache__*"]
        )
    ],
)
