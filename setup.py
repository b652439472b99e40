"""ctlake: the package lives in libs/ctlake; `ctlake` is its console script.

The pinned stack is in requirements/lock.txt (installed by `make venv`); install_requires
only names what the library imports at its core, so the wheel can be shipped to Spark
executors with --py-files without pulling the whole stack.
"""

from setuptools import find_packages, setup

setup(
    name="ctlake",
    version="0.1.0",
    description="An open lakehouse for chest CT: DICOM → Delta → radiomics → 3D CNNs",
    package_dir={"": "libs"},
    packages=find_packages("libs"),
    package_data={"ctlake.dicom": ["ps315_annex_e.csv"], "ctlake.radiomics": ["LICENSE-pyradiomics.txt"]},
    python_requires=">=3.11,<3.12",
    install_requires=["numpy>=1.26,<2", "pyyaml>=6", "pydicom>=3.0,<3.1"],
    entry_points={"console_scripts": ["ctlake=ctlake.cli:main"]},
    license="Apache-2.0",
)
