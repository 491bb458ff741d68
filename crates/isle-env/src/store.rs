//! The durable-metadata seam: the node's identity and the cluster membership it has learned.

use isle_types::{Identity, Member, NodeId};

/// Durable storage for a node's identity and membership. Every write is durable when it returns.
pub trait MetaStore: Send + 'static {
    /// The identity saved in this data dir, if it was ever initialised.
    fn load_identity(&self) -> Result<Option<Identity>, StoreError>;
    /// Saves the identity (fsynced before returning).
    fn save_identity(&mut self, identity: &Identity) -> Result<(), StoreError>;
    /// Every member this node has learned of, itself included.
    fn load_members(&self) -> Result<Vec<Member>, StoreError>;
    /// Inserts or replaces members in one durable transaction.
    fn save_members(&mut self, members: &[Member]) -> Result<(), StoreError>;
    /// Forgets a member (operator removal).
    fn remove_member(&mut self, id: NodeId) -> Result<(), StoreError>;
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (IO error, full disk, lock held by another process, ...).
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A record on disk did not decode: the file is corrupt or from an incompatible version.
    #[error("corrupt record in {table}: {detail}")]
    Corrupt {
        /// Which table held the bad record.
        table: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}
