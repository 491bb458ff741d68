//! Why a voter set or a policy name was refused.

use isle_types::NodeId;

/// Why a voter set cannot be analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// Split enumeration is exponential, so it is bounded.
    #[error(
        "{n} voters is too many to enumerate every split (at most {max}); use `tolerance` for failure counts"
    )]
    TooManyVoters {
        /// How many voters were given.
        n: usize,
        /// The most voters the analysis accepts.
        max: usize,
    },
    /// A quorum needs at least one voter.
    #[error("no voters: a quorum needs at least one voter")]
    NoVoters,
    /// Every voter must weigh at least 1.
    #[error("voter {0} has weight 0: every voter needs a weight of at least 1")]
    ZeroWeight(NodeId),
    /// Each voter id may appear once.
    #[error("voter {0} is listed more than once")]
    DuplicateVoter(NodeId),
}

/// A policy name that is none of `majority`, `weighted`, `zones`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quorum policy {0:?}: expected majority, weighted or zones")]
pub struct ParsePolicyError(pub String);
