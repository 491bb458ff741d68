//! The Redis-compatible (RESP2) endpoint of the AP keyspace (being written).
