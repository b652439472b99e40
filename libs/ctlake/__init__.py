"""ctlake: an open lakehouse for chest CT (DICOM → Delta → radiomics → 3D CNNs)."""

__version__ = "0.1.0"
