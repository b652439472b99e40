"""DICOM core (pure, no Spark): read bytes, decode pixels, flatten metadata, de-identify."""
