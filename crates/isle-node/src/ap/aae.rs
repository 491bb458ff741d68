//! Anti-entropy (placeholder while the exchange core lands).

use isle_ap::ApError;
use serde::{Deserialize, Serialize};

use super::Ap;

/// Placeholder request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AaeRequest;
/// Placeholder reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AaeReply;

pub(super) async fn run(_ap: Ap) {}

impl Ap {
    pub(super) fn aae_respond(&self, _request: &AaeRequest) -> Result<AaeReply, ApError> {
        Err(ApError::Internal("not yet".into()))
    }
}
