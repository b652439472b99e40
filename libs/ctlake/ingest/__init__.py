"""Ingestion: hospital folder/zip → de-identify → Kafka → bronze Delta (and the batch twin)."""
