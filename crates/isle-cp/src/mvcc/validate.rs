//! Static checks of requests against the limits and the current state, before anything is
//! written: a request that passes cannot fail half-way, so a refused write changes nothing.

use crate::command::{DeleteRangeRequest, PutRequest, RangeRequest, RequestId};
use crate::error::CpError;
use crate::limits::{KEY_BYTES_MAX, REQUEST_ID_BYTES_MAX, VALUE_BYTES_MAX};

use super::StateMachine;

/// Key and range end: non-empty key, both within `KEY_BYTES_MAX`.
pub(crate) fn key(key: &[u8], range_end: &[u8]) -> Result<(), CpError> {
    if key.is_empty() {
        return Err(CpError::EmptyKey);
    }
    let size = key.len().max(range_end.len());
    if size > KEY_BYTES_MAX {
        return Err(CpError::KeyTooLarge {
            size,
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// The idempotency key fits `REQUEST_ID_BYTES_MAX` and is not empty.
pub(crate) fn request_id(id: Option<&RequestId>) -> Result<(), CpError> {
    match id {
        Some(id) if id.0.is_empty() => Err(CpError::InvalidRequest {
            reason: "request id is empty: omit it or give a non-empty id".into(),
        }),
        Some(id) if id.0.len() > REQUEST_ID_BYTES_MAX => Err(CpError::InvalidRequest {
            reason: format!(
                "request id of {} bytes is too long: at most {REQUEST_ID_BYTES_MAX} bytes",
                id.0.len()
            ),
        }),
        _ => Ok(()),
    }
}

impl StateMachine {
    /// A read's revision is between the compaction point and the current revision.
    pub(crate) fn check_read_revision(&self, revision: i64) -> Result<(), CpError> {
        if revision > self.store.revision {
            return Err(CpError::FutureRevision {
                requested: revision,
                current: self.store.revision,
            });
        }
        if revision > 0 && revision < self.store.compact_revision {
            return Err(CpError::Compacted {
                requested: revision,
                compacted: self.store.compact_revision,
            });
        }
        Ok(())
    }

    pub(crate) fn validate_range(&self, request: &RangeRequest) -> Result<(), CpError> {
        key(&request.key, &request.range_end)?;
        self.check_read_revision(request.revision)
    }

    pub(crate) fn validate_put(&self, request: &PutRequest) -> Result<(), CpError> {
        key(&request.key, &[])?;
        if request.value.len() > VALUE_BYTES_MAX {
            return Err(CpError::ValueTooLarge {
                size: request.value.len(),
                max: VALUE_BYTES_MAX,
            });
        }
        self.check_fence(request.fence.as_ref())?;
        if request.ignore_value && !request.value.is_empty() {
            return Err(CpError::InvalidRequest {
                reason: "value is provided with ignore_value: send an empty value".into(),
            });
        }
        if request.ignore_lease && request.lease != 0 {
            return Err(CpError::InvalidRequest {
                reason: "lease is provided with ignore_lease: send lease 0".into(),
            });
        }
        if (request.ignore_value || request.ignore_lease)
            && self.store.latest(&request.key).is_none()
        {
            return Err(CpError::KeyNotFound);
        }
        if request.lease != 0 && !self.leases.contains(request.lease) {
            return Err(CpError::LeaseNotFound { id: request.lease });
        }
        Ok(())
    }

    pub(crate) fn validate_delete(&self, request: &DeleteRangeRequest) -> Result<(), CpError> {
        key(&request.key, &request.range_end)?;
        self.check_fence(request.fence.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_limits() {
        let long = vec![b'k'; KEY_BYTES_MAX + 1];
        type Case<'a> = (&'a [u8], &'a [u8], Result<(), CpError>);
        let cases: [Case; 4] = [
            (b"k", b"", Ok(())),
            (b"", b"", Err(CpError::EmptyKey)),
            (
                &long,
                b"",
                Err(CpError::KeyTooLarge {
                    size: KEY_BYTES_MAX + 1,
                    max: KEY_BYTES_MAX,
                }),
            ),
            (
                b"k",
                &long,
                Err(CpError::KeyTooLarge {
                    size: KEY_BYTES_MAX + 1,
                    max: KEY_BYTES_MAX,
                }),
            ),
        ];
        for (k, end, expected) in cases {
            assert_eq!(key(k, end), expected);
        }
    }
}
