//! HTTP/JSON for the AP keyspace under `/v1/ap/...` (being written).
