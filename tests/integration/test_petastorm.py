"""petastorm: a Spark DataFrame → a torch DataLoader, every row once per epoch, values intact."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_spark_dataframe_to_torch_dataloader(spark, lake_tmp):
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, f"file://{lake_tmp}/petastorm")
    n, size = 64, 4 * 6 * 6
    rng = np.random.default_rng(0)
    patches = rng.integers(-1000, 400, size=(n, size)).astype(np.float32)
    rows = [(i, patches[i].tolist(), int(i % 2)) for i in range(n)]
    df = spark.createDataFrame(rows, "id long, patch array<float>, label int").repartition(2)
    converter = make_spark_converter(df)
    try:
        assert len(converter) == n
        seen_ids, seen_labels = [], []
        with converter.make_torch_dataloader(batch_size=16, num_epochs=1, workers_count=2) as loader:
            for batch in loader:
                ids = batch["id"].numpy()
                got = batch["patch"].numpy()
                assert got.shape[1] == size
                np.testing.assert_array_equal(got, patches[ids])
                seen_ids += ids.tolist()
                seen_labels += batch["label"].numpy().tolist()
        assert sorted(seen_ids) == list(range(n))
        assert seen_labels == [i % 2 for i in seen_ids]
    finally:
        converter.delete()
