//! Range reads at the latest or a past revision, with etcd's limit/count/more semantics.

use crate::command::{RangeRequest, RangeResponse};
use crate::error::CpError;

use super::StateMachine;
use super::keyrange::KeyRange;
use super::store::to_kv;

impl StateMachine {
    /// Reads keys as etcd's `Range`: `Compacted` below the compaction point, `FutureRevision`
    /// above the current revision. Never changes state.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, CpError> {
        self.validate_range(request)?;
        let mut response = self.exec_range(request);
        response.header_revision = self.store.revision;
        Ok(response)
    }

    /// Serves a validated range; revision 0 reads the latest entries, which inside a
    /// transaction include its earlier writes. The header is left for the caller.
    pub(crate) fn exec_range(&self, request: &RangeRequest) -> RangeResponse {
        let at = if request.revision > 0 {
            request.revision
        } else {
            i64::MAX
        };
        let limit = usize::try_from(request.limit)
            .ok()
            .filter(|limit| *limit > 0)
            .unwrap_or(usize::MAX);
        let range = KeyRange::new(&request.key, &request.range_end);
        let mut response = RangeResponse::default();
        for (key, revision, stored) in self.store.visible(range, at) {
            response.count += 1;
            if request.count_only || response.kvs.len() >= limit {
                continue;
            }
            let mut kv = to_kv(key, revision, stored);
            if request.keys_only {
                kv.value.clear();
            }
            response.kvs.push(kv);
        }
        response.more = !request.count_only && response.kvs.len() < response.count as usize;
        response
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, DeleteRangeRequest, PutRequest, RangeRequest};
    use crate::error::CpError;
    use crate::mvcc::StateMachine;

    fn machine(writes: &[(&[u8], Option<&[u8]>)]) -> StateMachine {
        let mut sm = StateMachine::default();
        for (index, (key, value)) in writes.iter().enumerate() {
            let command = match value {
                Some(value) => Command::new(PutRequest::new(key, value)),
                None => Command::new(DeleteRangeRequest::key(key)),
            };
            sm.apply(index as u64 + 1, command, 0).expect("write");
        }
        sm
    }

    fn keys(sm: &StateMachine, request: RangeRequest) -> Vec<(Vec<u8>, Vec<u8>)> {
        let response = sm.range(&request).expect("range");
        response
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect()
    }

    #[test]
    fn ranges_at_past_revisions_and_by_prefix() {
        // revisions: a=1@2, b=1@3, a=2@4, del b@5, ab=1@6
        let sm = machine(&[
            (b"a", Some(b"1")),
            (b"b", Some(b"1")),
            (b"a", Some(b"2")),
            (b"b", None),
            (b"ab", Some(b"1")),
        ]);
        let at = |revision: i64| RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            revision,
            ..RangeRequest::default()
        };
        let kv = |k: &[u8], v: &[u8]| (k.to_vec(), v.to_vec());
        type Pairs = Vec<(Vec<u8>, Vec<u8>)>;
        let cases: Vec<(RangeRequest, Pairs)> = vec![
            (at(1), vec![]),
            (at(2), vec![kv(b"a", b"1")]),
            (at(3), vec![kv(b"a", b"1"), kv(b"b", b"1")]),
            (at(4), vec![kv(b"a", b"2"), kv(b"b", b"1")]),
            (at(5), vec![kv(b"a", b"2")]),
            (at(0), vec![kv(b"a", b"2"), kv(b"ab", b"1")]),
            (
                RangeRequest::prefix(b"a"),
                vec![kv(b"a", b"2"), kv(b"ab", b"1")],
            ),
            (RangeRequest::prefix(b"ab"), vec![kv(b"ab", b"1")]),
            (RangeRequest::key(b"b"), vec![]),
        ];
        for (request, expected) in cases {
            assert_eq!(keys(&sm, request.clone()), expected, "{request:?}");
        }
    }

    #[test]
    fn limit_count_more_keys_only_count_only() {
        let sm = machine(&[
            (b"k1", Some(b"v")),
            (b"k2", Some(b"v")),
            (b"k3", Some(b"v")),
        ]);
        // (limit, keys_only, count_only) -> (kvs, count, more, values empty)
        let cases = [
            (0, false, false, 3, 3, false),
            (2, false, false, 2, 3, true),
            (3, false, false, 3, 3, false),
            (5, true, false, 3, 3, false),
            (1, false, true, 0, 3, false),
        ];
        for (limit, keys_only, count_only, n_kvs, count, more) in cases {
            let request = RangeRequest {
                limit,
                keys_only,
                count_only,
                ..RangeRequest::prefix(b"k")
            };
            let response = sm.range(&request).expect("range");
            assert_eq!(response.kvs.len(), n_kvs, "{request:?}");
            assert_eq!(
                (response.count, response.more),
                (count, more),
                "{request:?}"
            );
            assert_eq!(response.header_revision, 4);
            if keys_only {
                assert!(response.kvs.iter().all(|kv| kv.value.is_empty()));
            }
        }
    }

    #[test]
    fn revision_errors() {
        let mut sm = machine(&[(b"a", Some(b"1")), (b"a", Some(b"2")), (b"a", Some(b"3"))]);
        sm.apply(
            9,
            Command::new(crate::command::CompactRequest { revision: 3 }),
            0,
        )
        .expect("compact");
        let at = |revision| RangeRequest {
            revision,
            ..RangeRequest::key(b"a")
        };
        assert_eq!(
            sm.range(&at(2)),
            Err(CpError::Compacted {
                requested: 2,
                compacted: 3
            })
        );
        assert_eq!(
            sm.range(&at(5)),
            Err(CpError::FutureRevision {
                requested: 5,
                current: 4
            })
        );
        assert_eq!(keys(&sm, at(3)), vec![(b"a".to_vec(), b"2".to_vec())]);
        assert_eq!(sm.range(&RangeRequest::key(b"")), Err(CpError::EmptyKey));
    }
}
