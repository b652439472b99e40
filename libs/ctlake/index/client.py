"""The official Elasticsearch client (8.x) built from the profile's connection settings.

Works against the embedded local node and a user's own Elasticsearch 8/9 cluster alike: only
``elasticsearch.url`` and the credentials (API key, or user and password; a CA file for TLS) change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctlake.config import Config, ElasticsearchConfig

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


def auth_kwargs(e: ElasticsearchConfig) -> dict:
    """The client's credential arguments from the profile: an API key, or user and password; a CA file."""
    kwargs: dict = {}
    if e.api_key:
        kwargs["api_key"] = e.api_key
    elif e.username:
        kwargs["basic_auth"] = (e.username, e.password or "")
    if e.ca_certs:
        kwargs["ca_certs"] = e.ca_certs
    return kwargs


def es_client(cfg: Config, *, request_timeout_s: float = 30.0) -> Elasticsearch:
    from elasticsearch import Elasticsearch

    return Elasticsearch(cfg.elasticsearch.url, request_timeout=request_timeout_s, retry_on_timeout=True,
                         max_retries=3, **auth_kwargs(cfg.elasticsearch))


def index_name(cfg: Config, entity: str) -> str:
    """The alias for ``entity`` (e.g. ``series``) under the profile's prefix: ``ctlake-series``."""
    return f"{cfg.elasticsearch.index_prefix}-{entity}"
