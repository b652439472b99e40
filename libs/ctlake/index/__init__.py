"""Elasticsearch: the client from the profile; indexing and dashboards come with the search issue."""
