"""The embedded Elasticsearch 8.19 node through the official client: bulk, aggregations, PIT."""

from __future__ import annotations

import uuid

import pytest
from ctlake.index.client import es_client

pytestmark = pytest.mark.integration

MAPPING = {
    "dynamic": "strict",
    "properties": {
        "series_uid": {"type": "keyword"},
        "manufacturer": {"type": "keyword"},
        "slice_thickness_mm": {"type": "float"},
        "slices": {"type": "integer"},
        "ingested_at": {"type": "date"},
    },
}
MAKERS = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA"]


def test_info_bulk_aggregation_point_in_time(cfg, elasticsearch):
    from elasticsearch import helpers

    es = es_client(cfg)
    assert es.ping()
    info = es.info()
    assert info["version"]["number"].startswith("8.19")
    index = f"{cfg.elasticsearch.index_prefix}-t-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=index, mappings=MAPPING, settings={"number_of_shards": 1,
                                                               "number_of_replicas": 0})
    n = 5000
    docs = ({"_index": index, "_id": f"s{i}",
             "_source": {"series_uid": f"s{i}", "manufacturer": MAKERS[i % 4],
                         "slice_thickness_mm": [0.625, 1.0, 1.25, 2.5][i % 4] if i % 5 else 5.0,
                         "slices": 100 + i % 300, "ingested_at": f"2026-0{1 + i % 9}-01T00:00:00Z"}}
            for i in range(n))
    ok, errors = helpers.bulk(es, docs, chunk_size=1000, raise_on_error=False)
    assert ok == n and not errors
    es.indices.refresh(index=index)
    assert es.count(index=index)["count"] == n
    # a strict mapping rejects an unknown field, and bulk reports it per document
    ok, errors = helpers.bulk(es, [{"_index": index, "_id": "bad", "_source": {"nope": 1}}],
                              raise_on_error=False)
    assert ok == 0 and errors and "strict" in str(errors[0]).lower()
    # aggregations
    res = es.search(index=index, size=0, aggs={
        "by_maker": {"terms": {"field": "manufacturer"}},
        "thick": {"range": {"field": "slice_thickness_mm", "ranges": [{"to": 3.0}, {"from": 3.0}]}},
        "per_month": {"date_histogram": {"field": "ingested_at", "calendar_interval": "month"}},
        "slices": {"stats": {"field": "slices"}},
    })
    makers = {b["key"]: b["doc_count"] for b in res["aggregations"]["by_maker"]["buckets"]}
    assert makers == {m: n // 4 for m in MAKERS}
    thick = [b["doc_count"] for b in res["aggregations"]["thick"]["buckets"]]
    assert thick == [n - n // 5, n // 5]
    assert len(res["aggregations"]["per_month"]["buckets"]) == 9
    assert res["aggregations"]["slices"]["count"] == n
    # point in time + search_after visits every document exactly once
    pit = es.open_point_in_time(index=index, keep_alive="1m")["id"]
    seen, after = [], None
    try:
        while True:
            page = es.search(size=700, pit={"id": pit, "keep_alive": "1m"},
                             sort=[{"series_uid": "asc"}], search_after=after,
                             query={"term": {"manufacturer": "Philips"}})
            hits = page["hits"]["hits"]
            if not hits:
                break
            seen += [h["_id"] for h in hits]
            after = hits[-1]["sort"]
    finally:
        es.close_point_in_time(id=pit)
    assert len(seen) == len(set(seen)) == n // 4
    # delete by id in bulk (no *-by-query on this node)
    helpers.bulk(es, ({"_op_type": "delete", "_index": index, "_id": f"s{i}"} for i in range(100)))
    es.indices.refresh(index=index)
    assert es.count(index=index)["count"] == n - 100
    es.indices.delete(index=index)


def test_template_and_alias_swap(cfg, elasticsearch):
    es = es_client(cfg)
    base = f"{cfg.elasticsearch.index_prefix}-tpl-{uuid.uuid4().hex[:6]}"
    es.indices.put_index_template(name=base, index_patterns=[f"{base}-v*"],
                                  template={"mappings": MAPPING, "settings": {"number_of_replicas": 0}})
    es.indices.create(index=f"{base}-v1")
    assert es.indices.get_mapping(index=f"{base}-v1")[f"{base}-v1"]["mappings"]["dynamic"] == "strict"
    es.indices.put_alias(index=f"{base}-v1", name=base)
    es.index(index=base, id="a", document={"series_uid": "a"}, refresh=True)
    es.indices.create(index=f"{base}-v2")
    es.index(index=f"{base}-v2", id="b", document={"series_uid": "b"}, refresh=True)
    es.indices.update_aliases(actions=[{"remove": {"index": f"{base}-v1", "alias": base}},
                                       {"add": {"index": f"{base}-v2", "alias": base}}])
    assert [h["_id"] for h in es.search(index=base)["hits"]["hits"]] == ["b"]
    es.indices.delete(index=f"{base}-v1,{base}-v2")
    es.indices.delete_index_template(name=base)
