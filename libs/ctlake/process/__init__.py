"""Spark glue for the batch jobs: bronze → silver (volumes) → gold (nodules, patches, radiomics)."""
