"""Installs tfvae: `pip install .` or `pip install -e .`; tests with `pip install -e ".[test]"`."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    scope = {}
    with open(os.path.join(HERE, "tfvae", "version.py")) as f:
        exec(f.read(), scope)
    return scope["__version__"]


setup(
    name="tfvae",
    version=read_version(),
    description="A model zoo of variational autoencoders on Keras 3 and TensorFlow Probability",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfvae", "tfvae.*"]) + ["tfvae.zoo_configs"],
    # zoo_configs/ sits at the top of the repo and is installed as tfvae/zoo_configs.
    package_dir={"tfvae.zoo_configs": "zoo_configs"},
    package_data={"tfvae.zoo_configs": ["*.yaml", "*.weights.h5"]},
    include_package_data=False,
    install_requires=[
        "tensorflow>=2.20",
        "keras>=3.10",
        "tensorflow-probability[tf]>=0.25",
        "numpy",
        "pyyaml",
        "matplotlib",
        "pillow",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3.5", "hypothesis>=6"]},
    entry_points={"console_scripts": ["tfvae=tfvae.cli:main"]},
)
