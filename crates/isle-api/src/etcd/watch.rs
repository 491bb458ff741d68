//! `etcdserverpb.Watch`: one bidirectional stream carrying any number of watches.
//!
//! Each watch keeps the next revision it has to deliver; after every revision change (and
//! after every request on the stream) each watch reads the replicated history from there with
//! `events_since`, sends what it found as one response (a revision is never split) and moves
//! its mark past it — so events are neither skipped nor repeated, whichever node serves the
//! stream and across leader changes. A start below the compaction point cancels the watch with
//! `compact_revision` set, as etcd does.

use std::collections::BTreeMap;
use std::pin::Pin;

use isle_cp::CpError;
use isle_cp::command::EventKind;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert::{event_to_pb, no_leader};
use super::rpc::watch_server::Watch;
use super::{Etcd, Reply, reply, rpc};

/// The metadata key of etcd's `WithRequireLeader`.
const REQUIRE_LEADER_KEY: &str = "hasleader";

/// Events fetched per history read; a revision with more is returned whole.
const BATCH: usize = 1000;

/// The Watch service.
pub(crate) struct WatchService(pub(crate) Etcd);

/// The outbound half of a watch stream.
type Outbound = Pin<Box<dyn Stream<Item = Result<rpc::WatchResponse, Status>> + Send>>;

/// One watch on a stream.
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The next revision whose events this watch has not delivered.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Outbound;

    async fn watch(
        &self,
        request: tonic::Request<Streaming<rpc::WatchRequest>>,
    ) -> Reply<Self::WatchStream> {
        // etcd's clients ask watches to end when the member loses its leader (`hasleader`
        // metadata: Go's `WithRequireLeader`, which etcdctl's watch uses).
        let require_leader = request
            .metadata()
            .get(REQUIRE_LEADER_KEY)
            .is_some_and(|value| value == "true");
        if require_leader && self.0.node.cp.check_quorum().is_err() {
            return Err(no_leader());
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run(self.0.clone(), inbound, tx, require_leader));
        reply(Box::pin(ReceiverStream::new(rx)) as Outbound)
    }
}

type Sender = mpsc::Sender<Result<rpc::WatchResponse, Status>>;

/// Serves one stream until the client closes it, or, when it requires a leader, until this
/// node's side loses its quorum.
async fn run(
    etcd: Etcd,
    mut inbound: Streaming<rpc::WatchRequest>,
    tx: Sender,
    require_leader: bool,
) {
    let mut stream = Watches {
        etcd: etcd.clone(),
        watchers: BTreeMap::new(),
        next_id: 0,
        tx,
    };
    let mut revision = etcd.subscribe();
    loop {
        if stream.deliver().await.is_err() {
            return;
        }
        tokio::select! {
            biased;
            message = inbound.message() => match message {
                Ok(Some(request)) => {
                    if stream.handle(request).await.is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            },
            changed = revision.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = stream.tx.closed() => return,
            _ = etcd.node.cp.quorum_lost(), if require_leader => {
                let _ = stream.tx.send(Err(no_leader())).await;
                return;
            }
        }
    }
}

/// The client went away.
struct Gone;

/// One stream's watches.
struct Watches {
    etcd: Etcd,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    tx: Sender,
}

impl Watches {
    async fn send(&self, response: rpc::WatchResponse) -> Result<(), Gone> {
        self.tx.send(Ok(response)).await.map_err(|_| Gone)
    }

    async fn handle(&mut self, request: rpc::WatchRequest) -> Result<(), Gone> {
        use rpc::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    self.send(rpc::WatchResponse {
                        header: Some(self.etcd.header_now()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Every event up to the current revision has been sent (deliver ran first).
                self.send(rpc::WatchResponse {
                    header: Some(self.etcd.header_now()),
                    watch_id: -1,
                    ..Default::default()
                })
                .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: rpc::WatchCreateRequest) -> Result<(), Gone> {
        use rpc::watch_create_request::FilterType;
        let current = self.etcd.current_revision();
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if self.watchers.contains_key(&id) {
            return self
                .send(rpc::WatchResponse {
                    header: Some(self.etcd.header(current)),
                    watch_id: id,
                    created: true,
                    canceled: true,
                    cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".into(),
                    ..Default::default()
                })
                .await;
        }
        if create.watch_id == 0 {
            self.next_id += 1;
        }
        let filters = &create.filters;
        self.watchers.insert(
            id,
            Watcher {
                next: if create.start_revision > 0 {
                    create.start_revision
                } else {
                    current + 1
                },
                key: create.key,
                range_end: create.range_end,
                prev_kv: create.prev_kv,
                no_put: filters.contains(&(FilterType::Noput as i32)),
                no_delete: filters.contains(&(FilterType::Nodelete as i32)),
            },
        );
        self.send(rpc::WatchResponse {
            header: Some(self.etcd.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    /// Sends every watch the events it has not seen yet.
    async fn deliver(&mut self) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            while let Some(watcher) = self.watchers.get_mut(&id) {
                let (result, revision) = {
                    let replica = self.etcd.node.cp.state().read();
                    let machine = &replica.machine;
                    let events =
                        machine.events_since(watcher.next, &watcher.key, &watcher.range_end, BATCH);
                    (events, machine.revision())
                };
                match result {
                    Ok(events) => {
                        let Some(last) = events.last() else {
                            watcher.next = watcher.next.max(revision + 1);
                            break;
                        };
                        watcher.next = last.kv.mod_revision + 1;
                        let events: Vec<_> = events
                            .iter()
                            .filter(|e| match e.kind {
                                EventKind::Put => !watcher.no_put,
                                EventKind::Delete => !watcher.no_delete,
                            })
                            .map(|e| event_to_pb(e, watcher.prev_kv))
                            .collect();
                        if !events.is_empty() {
                            let header = self.etcd.header(revision);
                            self.send(rpc::WatchResponse {
                                header: Some(header),
                                watch_id: id,
                                events,
                                ..Default::default()
                            })
                            .await?;
                        }
                    }
                    Err(err) => {
                        self.watchers.remove(&id);
                        let compact_revision = match err {
                            CpError::Compacted { compacted, .. } => compacted,
                            _ => 0,
                        };
                        let header = self.etcd.header(revision);
                        self.send(rpc::WatchResponse {
                            header: Some(header),
                            watch_id: id,
                            canceled: true,
                            compact_revision,
                            cancel_reason: if compact_revision == 0 {
                                err.to_string()
                            } else {
                                "etcdserver: mvcc: required revision has been compacted".into()
                            },
                            ..Default::default()
                        })
                        .await?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}
