//! Per-partition Merkle trees (being written).
