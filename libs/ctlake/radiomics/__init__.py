"""Radiomics engine: IBSI chapter 1 definitions, PyRadiomics names and parameter files.

One module per feature family (``firstorder``, ``shape``, ``glcm``, ``glrlm``, ``glszm``, ``gldm``,
``ngtdm``), each with a ``FEATURES`` name
table (PyRadiomics name -> function, IBSI code) and ``IBSI_ONLY`` for IBSI features PyRadiomics lacks
or defines differently; ``discretise`` (fixed bin width / count / none); ``mesh`` (marching cubes);
``extract`` (``load_params``, ``extract``, ``extract_ibsi``). The family modules are numpy: the
definitions, the IBSI path and the fallback. ``extract`` itself runs on ``engine`` + ``_kernels``: numba
kernels (cached on disk, compiled on first use) that compute each class's matrices and features in one
call, the same values within round-off. Pure numpy/scipy/numba; never imports pyspark.
"""

from .extract import Params, RadiomicsSettingsError, extract, extract_ibsi, load_params, params_from_mapping

__all__ = ["Params", "RadiomicsSettingsError", "extract", "extract_ibsi", "load_params", "params_from_mapping"]
