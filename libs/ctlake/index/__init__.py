"""Elasticsearch: every series, nodule, feature vector, pipeline run and model, kept in step with the lake.

- ``client``    the official client from the profile (``es_client``, ``index_name``)
- ``mapping``   Spark schema → Elasticsearch mapping (the type rules)
- ``entities``  what is indexed: one entity per index, its Delta table(s) and document schema
- ``model``     versioned templates, concrete indices behind aliases, bulk with retries, rejections
- ``indexer``   the incremental job over Delta's change data feed (``index_tables``, ``index_after``)
- ``training``  MLflow runs → the ``training_runs`` index
- ``search``    ``find_series`` and cohort files (``write_cohort``, ``read_cohort``)
- ``aggs``      the five dashboards' aggregations as plain functions (``PANELS``)
- ``kibana``    Kibana saved objects generated from ``aggs.PANELS``; export and import
- ``synthetic`` synthetic radiomics rows for the tests and the benchmark

Imports are per module (``from ctlake.index.indexer import index_tables``) so that importing the
package costs nothing.
"""
