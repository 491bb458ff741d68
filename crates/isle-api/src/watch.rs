//! `GET /v1/cp/watch?key=K&prefix=true&start_revision=R`: a server-sent-event stream of the
//! CP keyspace's changes, from `start_revision` (default: the next revision) on, in revision
//! order, never skipping or repeating one. A client that reconnects resumes with
//! `start_revision` = the last revision it saw + 1. Each event's data is JSON:
//! `{"type": "put"|"delete", "key", "value", "revision", "version", "prev_value"?}`.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use isle_cp::command::{EventKind, prefix_end};
use isle_node::NodeHandle;
use isle_node::cp::CpRequestError;

use crate::cp::refusal;
use crate::wire::ErrorBody;
use crate::wire::cp::{WatchEvent, WatchEventType, WatchQuery};

/// Most events read from the history per wake-up.
const EVENTS_BATCH_MAX: usize = 1000;

struct Watcher {
    node: NodeHandle,
    changes: isle_node::cp::Changes,
    key: Vec<u8>,
    range_end: Vec<u8>,
    next: i64,
    pending: std::collections::VecDeque<Event>,
    done: bool,
}

fn sse_event(event: &isle_cp::command::Event) -> Event {
    let kind = match event.kind {
        EventKind::Put => WatchEventType::Put,
        EventKind::Delete => WatchEventType::Delete,
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let data = WatchEvent {
        key: text(&event.kv.key),
        prev_value: event.prev_kv.as_ref().map(|kv| text(&kv.value)),
        revision: event.kv.mod_revision,
        kind,
        value: text(&event.kv.value),
        version: event.kv.version,
    };
    // Strings and integers only: encoding cannot fail.
    Event::default()
        .event(kind.name())
        .id(event.kv.mod_revision.to_string())
        .data(serde_json::to_string(&data).unwrap_or_default())
}

impl Watcher {
    /// The next event to send: from the buffer, else from the history, else after a change.
    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, Watcher)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let read = {
                let replica = self.node.cp.state().read();
                replica.machine.events_since(
                    self.next,
                    &self.key,
                    &self.range_end,
                    EVENTS_BATCH_MAX,
                )
            };
            match read {
                Ok(events) if !events.is_empty() => {
                    if let Some(last) = events.last() {
                        self.next = last.kv.mod_revision + 1;
                    }
                    self.pending.extend(events.iter().map(sse_event));
                }
                Ok(_) => {
                    if !self.changes.next().await {
                        return None;
                    }
                }
                Err(err) => {
                    self.done = true;
                    let data = serde_json::to_string(&ErrorBody::message(err)).unwrap_or_default();
                    self.pending
                        .push_back(Event::default().event("error").data(data));
                }
            }
        }
    }
}

pub(crate) async fn watch(
    State(node): State<NodeHandle>,
    Query(query): Query<WatchQuery>,
) -> Response {
    if query.key.is_empty() {
        return refusal(&CpRequestError::Rejected(isle_cp::CpError::EmptyKey));
    }
    let range_end = if query.prefix {
        prefix_end(query.key.as_bytes())
    } else {
        Vec::new()
    };
    let next = if query.start_revision > 0 {
        query.start_revision
    } else {
        node.cp.state().read().machine.revision() + 1
    };
    let watcher = Watcher {
        changes: node.cp.changes(),
        node,
        key: query.key.into_bytes(),
        range_end,
        next,
        pending: Default::default(),
        done: false,
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(stream::unfold(watcher, Watcher::next_event));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
