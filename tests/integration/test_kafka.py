"""The real KRaft broker: 10 MiB messages, and a Spark structured stream into Delta."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from ctlake.infra.kafka_admin import MAX_MESSAGE_BYTES, client_config, ensure_topic, spark_options

pytestmark = pytest.mark.integration


def _producer(cfg):
    from kafka import KafkaProducer

    return KafkaProducer(acks="all", max_request_size=MAX_MESSAGE_BYTES, linger_ms=5,
                         **client_config(cfg))


def test_produce_consume_10mib(cfg, kafka):
    from kafka import KafkaConsumer

    topic = ensure_topic(cfg, f"t-big-{uuid.uuid4().hex[:8]}", partitions=1)
    payloads = [os.urandom(10 * 1024 * 1024) for _ in range(3)]
    producer = _producer(cfg)
    for i, p in enumerate(payloads):
        producer.send(topic, key=f"k{i}".encode(), value=p,
                      headers=[("sha256", hashlib.sha256(p).hexdigest().encode())])
    producer.flush(60)
    producer.close()
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=MAX_MESSAGE_BYTES + 1024 * 1024,
                             consumer_timeout_ms=20_000, **client_config(cfg))
    got = []
    for msg in consumer:
        got.append(msg)
        if len(got) == len(payloads):
            break
    consumer.close()
    assert [m.key for m in got] == [b"k0", b"k1", b"k2"]
    for m, p in zip(got, payloads, strict=True):
        assert len(m.value) == 10 * 1024 * 1024
        assert m.value == p
        assert dict(m.headers)["sha256"].decode() == hashlib.sha256(p).hexdigest()


def test_topic_is_created_with_dicom_limits(cfg, kafka):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    topic = ensure_topic(cfg, f"t-cfg-{uuid.uuid4().hex[:8]}")
    assert ensure_topic(cfg, topic) == topic  # idempotent
    admin = KafkaAdminClient(**client_config(cfg))
    try:
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        text = repr(res)
    finally:
        admin.close()
    assert "max.message.bytes" in text and str(MAX_MESSAGE_BYTES) in text


def _stream_once(spark, cfg, topic, table_path, checkpoint):
    """One availableNow run of topic → Delta with a fixed column selection."""
    reader = spark.readStream.format("kafka").option("subscribe", topic) \
        .option("startingOffsets", "earliest").option("failOnDataLoss", "true")
    for k, v in spark_options(cfg).items():
        reader = reader.option(k, v)
    df = reader.load().selectExpr("CAST(key AS STRING) AS key", "value", "topic", "partition",
                                  "offset", "timestamp AS kafka_time", "sha2(value, 256) AS sha256")
    query = (df.writeStream.format("delta").option("checkpointLocation", checkpoint)
             .trigger(availableNow=True).start(table_path))
    query.awaitTermination(300)
    assert query.exception() is None


def test_structured_stream_to_delta_exactly_once(spark, cfg, kafka, lake_tmp):
    topic = ensure_topic(cfg, f"t-stream-{uuid.uuid4().hex[:8]}", partitions=2)
    table_path, checkpoint = str(lake_tmp / "events"), str(lake_tmp / "_checkpoint")
    producer = _producer(cfg)
    sent = {}
    for i in range(40):
        value = os.urandom(1000 + i)
        sent[f"m{i:03d}"] = hashlib.sha256(value).hexdigest()
        producer.send(topic, key=f"m{i:03d}".encode(), value=value)
    producer.flush(30)
    _stream_once(spark, cfg, topic, table_path, checkpoint)
    rows = spark.read.format("delta").load(table_path)
    assert rows.columns == ["key", "value", "topic", "partition", "offset", "kafka_time", "sha256"]
    assert rows.count() == 40
    # re-run with nothing new: no duplicates
    _stream_once(spark, cfg, topic, table_path, checkpoint)
    assert spark.read.format("delta").load(table_path).count() == 40
    # more data, then another run: only the new messages arrive
    for i in range(40, 50):
        value = os.urandom(500 + i)
        sent[f"m{i:03d}"] = hashlib.sha256(value).hexdigest()
        producer.send(topic, key=f"m{i:03d}".encode(), value=value)
    producer.flush(30)
    producer.close()
    _stream_once(spark, cfg, topic, table_path, checkpoint)
    final = {r.key: r.sha256 for r in spark.read.format("delta").load(table_path).collect()}
    assert final == sent
    assert spark.read.format("delta").load(table_path).select("topic", "partition", "offset") \
        .distinct().count() == 50
