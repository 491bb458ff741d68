//! The seam between the AP interfaces (HTTP, RESP) and the node's AP coordinator, so the
//! interfaces can be tested against a stand-in and served by the real thing.

use std::future::Future;

use isle_ap::{ApError, BucketInfo, Op, ReadOptions, ReadReply, WriteOptions, WriteReply};

/// What an AP interface needs from a node.
pub trait ApBackend: Clone + Send + Sync + 'static {
    /// Reads `key` from `bucket`, merging the replicas' answers.
    fn get(
        &self,
        bucket: String,
        key: Vec<u8>,
        options: ReadOptions,
    ) -> impl Future<Output = Result<ReadReply, ApError>> + Send;

    /// Applies `op` to `key` in `bucket` and replicates it.
    fn apply(
        &self,
        bucket: String,
        key: Vec<u8>,
        op: Op,
        options: WriteOptions,
    ) -> impl Future<Output = Result<WriteReply, ApError>> + Send;

    /// The buckets this node serves, in configuration order (RESP `SELECT i` picks the i-th).
    fn buckets(&self) -> Vec<BucketInfo>;

    /// This node's id.
    fn node_id(&self) -> u64;
}

impl ApBackend for isle_node::ap::Ap {
    async fn get(
        &self,
        bucket: String,
        key: Vec<u8>,
        options: ReadOptions,
    ) -> Result<ReadReply, ApError> {
        isle_node::ap::Ap::get(self, &bucket, &key, options).await
    }

    async fn apply(
        &self,
        bucket: String,
        key: Vec<u8>,
        op: Op,
        options: WriteOptions,
    ) -> Result<WriteReply, ApError> {
        isle_node::ap::Ap::apply(self, &bucket, &key, op, options).await
    }

    fn buckets(&self) -> Vec<BucketInfo> {
        isle_node::ap::Ap::buckets(self)
    }

    fn node_id(&self) -> u64 {
        isle_node::ap::Ap::node_id(self).0
    }
}

/// A one-replica, in-memory backend for the interfaces' unit tests.
#[cfg(test)]
pub(crate) mod memory {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use isle_ap::{
        ApError, BucketInfo, Hlc, Object, Op, ReadOptions, ReadReply, Replicas, Rule, WriteOptions,
        WriteReply,
    };
    use isle_types::NodeId;

    use super::ApBackend;

    /// Every key in one map, stamped by one clock that ticks once per write.
    /// Every object by (bucket, key), the clock, and the tick count.
    type State = (BTreeMap<(String, Vec<u8>), Object>, Hlc, u64);

    #[derive(Clone)]
    pub(crate) struct MemoryBackend {
        state: Arc<Mutex<State>>,
    }

    impl MemoryBackend {
        pub(crate) fn new() -> Self {
            Self {
                state: Arc::new(Mutex::new((BTreeMap::new(), Hlc::new(NodeId(1), 1000), 0))),
            }
        }

        fn rule(bucket: &str) -> Rule {
            if bucket == "lww" {
                Rule::Lww
            } else {
                Rule::Siblings
            }
        }
    }

    fn replicas(level: String) -> Replicas {
        Replicas {
            answered: 1,
            asked: 1,
            needed: 1,
            level,
            fallbacks: 0,
        }
    }

    impl ApBackend for MemoryBackend {
        async fn get(
            &self,
            bucket: String,
            key: Vec<u8>,
            options: ReadOptions,
        ) -> Result<ReadReply, ApError> {
            isle_ap::request::validate(&bucket, &key, 0)?;
            let state = self.state.lock().expect("lock");
            let rule = Self::rule(&bucket);
            let object = state.0.get(&(bucket, key));
            Ok(ReadReply {
                value: object.map_or(isle_ap::Value::Absent, Object::value),
                context: object.map(Object::context).unwrap_or_default(),
                rule,
                stamp: object.and_then(Object::stamp),
                replicas: replicas(options.r.to_string()),
            })
        }

        async fn apply(
            &self,
            bucket: String,
            key: Vec<u8>,
            op: Op,
            options: WriteOptions,
        ) -> Result<WriteReply, ApError> {
            isle_ap::request::validate(&bucket, &key, 0)?;
            let mut state = self.state.lock().expect("lock");
            let rule = Self::rule(&bucket);
            state.2 += 1;
            let tick = state.2;
            let stamp = state.1.now(tick);
            let object = state
                .0
                .entry((bucket, key))
                .or_insert_with(|| Object::empty_for(&op, rule));
            let applied = object.apply(&op, NodeId(1), stamp)?;
            Ok(WriteReply {
                value: object.value(),
                context: object.context(),
                rule,
                stamp: object.stamp(),
                applied,
                replicas: replicas(options.w.to_string()),
            })
        }

        fn buckets(&self) -> Vec<BucketInfo> {
            vec![
                BucketInfo {
                    name: "default".into(),
                    rule: Rule::Siblings,
                    n: 3,
                },
                BucketInfo {
                    name: "lww".into(),
                    rule: Rule::Lww,
                    n: 3,
                },
            ]
        }

        fn node_id(&self) -> u64 {
            1
        }
    }
}
