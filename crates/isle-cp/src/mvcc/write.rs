//! Put and DeleteRange: validation, the writes themselves, and the bookkeeping every write
//! does (lease attachments, lock holders).

use crate::command::{DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse};
use crate::error::CpError;

use super::StateMachine;
use super::keyrange::KeyRange;
use super::store::WriteCtx;

impl StateMachine {
    pub(crate) fn apply_put(&mut self, request: PutRequest) -> Result<PutResponse, CpError> {
        self.validate_put(&request)?;
        let mut ctx = self.store.begin();
        let mut response = self.exec_put(&mut ctx, request);
        self.commit(&ctx);
        response.header_revision = self.store.revision;
        Ok(response)
    }

    pub(crate) fn apply_delete(
        &mut self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, CpError> {
        self.validate_delete(&request)?;
        let mut ctx = self.store.begin();
        let mut response = self.exec_delete(&mut ctx, request);
        self.commit(&ctx);
        response.header_revision = self.store.revision;
        Ok(response)
    }

    /// Runs a validated put. `ignore_value`/`ignore_lease` fall back to empty/no lease if an
    /// earlier op of the same transaction deleted the key (validation saw it live, as etcd).
    pub(crate) fn exec_put(&mut self, ctx: &mut WriteCtx, request: PutRequest) -> PutResponse {
        let current = self.store.latest(&request.key);
        let value = match (&current, request.ignore_value) {
            (Some(kv), true) => kv.value.clone(),
            (None, true) => Vec::new(),
            (_, false) => request.value,
        };
        let lease = match (&current, request.ignore_lease) {
            (Some(kv), true) => kv.lease,
            (None, true) => 0,
            (_, false) => request.lease,
        };
        let previous = self.put_key(ctx, request.key, value, lease);
        PutResponse {
            header_revision: 0,
            prev_kv: previous.filter(|_| request.prev_kv),
        }
    }

    /// Runs a validated delete over the live keys of the range.
    pub(crate) fn exec_delete(
        &mut self,
        ctx: &mut WriteCtx,
        request: DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let range = KeyRange::new(&request.key, &request.range_end);
        let keys: Vec<Vec<u8>> = self
            .store
            .visible(range, i64::MAX)
            .map(|(key, _, _)| key.to_vec())
            .collect();
        let mut response = DeleteRangeResponse::default();
        for key in keys {
            if let Some(previous) = self.delete_key(ctx, &key) {
                response.deleted += 1;
                if request.prev_kv {
                    response.prev_kvs.push(previous);
                }
            }
        }
        response
    }

    /// Writes one key and moves its lease attachment.
    pub(crate) fn put_key(
        &mut self,
        ctx: &mut WriteCtx,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    ) -> Option<KeyValue> {
        let previous = self.store.put(ctx, key.clone(), value, lease);
        let previous_lease = previous.as_ref().map_or(0, |kv| kv.lease);
        if previous_lease != lease {
            self.leases.detach(previous_lease, &key);
            self.leases.attach(lease, key);
        }
        previous
    }

    /// Deletes one key and its lease attachment.
    pub(crate) fn delete_key(&mut self, ctx: &mut WriteCtx, key: &[u8]) -> Option<KeyValue> {
        let previous = self.store.delete(ctx, key)?;
        self.leases.detach(previous.lease, key);
        Some(previous)
    }

    /// Closes a write: bumps the revision if anything was written, then updates lock holders
    /// for the keys touched.
    pub(crate) fn commit(&mut self, ctx: &WriteCtx) {
        self.store.commit(ctx);
        self.locks.refresh(&ctx.touched, &self.store);
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, DeleteRangeRequest, KeyValue, PutRequest, Response};
    use crate::error::CpError;
    use crate::mvcc::StateMachine;

    fn kv(key: &[u8], value: &[u8], create: i64, modified: i64, version: i64) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: create,
            mod_revision: modified,
            version,
            value: value.to_vec(),
            lease: 0,
        }
    }

    #[test]
    fn revisions_and_versions_follow_etcd() {
        let mut sm = StateMachine::default();
        let put = |key: &[u8], value: &[u8]| {
            Command::new(PutRequest {
                prev_kv: true,
                ..PutRequest::new(key, value)
            })
        };
        let delete = |key: &[u8]| {
            Command::new(DeleteRangeRequest {
                prev_kv: true,
                ..DeleteRangeRequest::key(key)
            })
        };
        // (command, header revision, latest kv of "a" afterwards)
        let steps = vec![
            (put(b"a", b"1"), 2, Some(kv(b"a", b"1", 2, 2, 1))),
            (put(b"a", b"2"), 3, Some(kv(b"a", b"2", 2, 3, 2))),
            (put(b"b", b"1"), 4, Some(kv(b"a", b"2", 2, 3, 2))),
            (delete(b"a"), 5, None),
            (delete(b"a"), 5, None),
            (put(b"a", b"3"), 6, Some(kv(b"a", b"3", 6, 6, 1))),
        ];
        for (index, (command, revision, latest)) in steps.into_iter().enumerate() {
            let response = sm.apply(index as u64 + 1, command, 0).expect("apply");
            assert_eq!(response.header_revision(), revision, "step {index}");
            assert_eq!(sm.store.latest(b"a"), latest, "step {index}");
        }
    }

    #[test]
    fn put_returns_prev_kv_and_delete_counts() {
        let mut sm = StateMachine::default();
        sm.apply(1, Command::new(PutRequest::new(b"p/1", b"x")), 0)
            .expect("put");
        sm.apply(2, Command::new(PutRequest::new(b"p/2", b"y")), 0)
            .expect("put");
        let response = sm
            .apply(
                3,
                Command::new(PutRequest {
                    prev_kv: true,
                    ..PutRequest::new(b"p/1", b"z")
                }),
                0,
            )
            .expect("put");
        let Response::Put(put) = response else {
            panic!("not a put response")
        };
        assert_eq!(put.prev_kv, Some(kv(b"p/1", b"x", 2, 2, 1)));
        let response = sm
            .apply(4, Command::new(DeleteRangeRequest::prefix(b"p/")), 0)
            .expect("delete");
        let Response::DeleteRange(delete) = response else {
            panic!("not a delete")
        };
        assert_eq!((delete.deleted, delete.header_revision), (2, 5));
        assert!(delete.prev_kvs.is_empty());
    }

    #[test]
    fn put_refusals() {
        let mut sm = StateMachine::default();
        let cases = [
            (PutRequest::new(b"", b"v"), CpError::EmptyKey),
            (
                PutRequest {
                    lease: 9,
                    ..PutRequest::new(b"k", b"v")
                },
                CpError::LeaseNotFound { id: 9 },
            ),
            (
                PutRequest {
                    ignore_value: true,
                    ..PutRequest::new(b"k", b"")
                },
                CpError::KeyNotFound,
            ),
            (
                PutRequest::new(b"k", &vec![0; crate::limits::VALUE_BYTES_MAX + 1]),
                CpError::ValueTooLarge {
                    size: crate::limits::VALUE_BYTES_MAX + 1,
                    max: crate::limits::VALUE_BYTES_MAX,
                },
            ),
        ];
        for (index, (request, error)) in cases.into_iter().enumerate() {
            let outcome = sm.apply(index as u64 + 1, Command::new(request), 0);
            assert_eq!(outcome, Err(error));
            assert_eq!(sm.revision(), 1);
        }
    }

    #[test]
    fn ignore_value_keeps_value_and_ignore_lease_keeps_lease() {
        let mut sm = StateMachine::default();
        let grant = crate::command::LeaseGrantRequest {
            id: 5,
            ttl_secs: 10,
        };
        sm.apply(1, Command::new(grant), 0).expect("grant");
        let put = PutRequest {
            lease: 5,
            ..PutRequest::new(b"k", b"v1")
        };
        sm.apply(2, Command::new(put), 0).expect("put");
        let keep_value = PutRequest {
            ignore_value: true,
            ignore_lease: true,
            ..PutRequest::new(b"k", b"")
        };
        sm.apply(3, Command::new(keep_value), 0).expect("put");
        let latest = sm.store.latest(b"k").expect("live");
        assert_eq!(
            (latest.value.as_slice(), latest.lease, latest.version),
            (&b"v1"[..], 5, 2)
        );
    }
}
