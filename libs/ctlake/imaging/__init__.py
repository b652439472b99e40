"""Imaging (pure numpy, no Spark): series assembly with QC flags, Hounsfield units, resampling,
lung and nodule masks, patches. Arrays are (z, y, x); the geometry travels as a :class:`Grid`."""
