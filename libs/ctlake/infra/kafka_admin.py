"""Kafka client settings from the profile, and topics created with DICOM-sized limits.

Auto topic creation is off on our broker (and should be on a real one): topics are created here,
explicitly, with ``max.message.bytes`` large enough for one DICOM instance (16 MiB by default;
bigger objects go by claim-check).
"""

from __future__ import annotations

from typing import Any

from ctlake.config import Config

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
TOPIC_DEFAULTS = {
    "max.message.bytes": str(MAX_MESSAGE_BYTES),
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 24 * 3600 * 1000),
    "compression.type": "producer",
}


def client_config(cfg: Config) -> dict[str, Any]:
    """kafka-python keyword arguments (bootstrap servers, security) for ``cfg``."""
    k = cfg.kafka
    out: dict[str, Any] = {"bootstrap_servers": k.bootstrap_servers.split(","),
                           "security_protocol": k.security_protocol}
    if k.sasl_mechanism:
        out.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_username,
                   sasl_plain_password=k.sasl_password)
    if k.ssl_cafile:
        out["ssl_cafile"] = k.ssl_cafile
    return out


def spark_options(cfg: Config) -> dict[str, str]:
    """``kafka.*`` options for Spark's Kafka source/sink, equivalent to :func:`client_config`."""
    k = cfg.kafka
    out = {"kafka.bootstrap.servers": k.bootstrap_servers,
           "kafka.security.protocol": k.security_protocol,
           "kafka.max.partition.fetch.bytes": str(MAX_MESSAGE_BYTES + 1024 * 1024)}
    if k.sasl_mechanism:
        out["kafka.sasl.mechanism"] = k.sasl_mechanism
        module = ("org.apache.kafka.common.security.scram.ScramLoginModule"
                  if k.sasl_mechanism.startswith("SCRAM") else
                  "org.apache.kafka.common.security.plain.PlainLoginModule")
        out["kafka.sasl.jaas.config"] = (f'{module} required username="{k.sasl_username}" '
                                         f'password="{k.sasl_password}";')
    if k.ssl_cafile:
        out["kafka.ssl.truststore.type"] = "PEM"
        out["kafka.ssl.truststore.location"] = k.ssl_cafile
    return out


def ensure_topic(cfg: Config, topic: str | None = None, *, partitions: int = 2, replication: int = 1,
                 config: dict[str, str] | None = None) -> str:
    """Create ``topic`` (default: the profile's) if it does not exist; return its name."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topic = topic or cfg.kafka.topic
    admin = KafkaAdminClient(client_id="ctlake-admin", **client_config(cfg))
    try:
        if topic in admin.list_topics():
            return topic
        new = NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                       topic_configs={**TOPIC_DEFAULTS, **(config or {})})
        try:
            admin.create_topics([new], timeout_ms=30_000)
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()
    return topic
