//! The receiving side: accept loop, one reader task per connection, inbound faults, delivery.
//!
//! A reader never waits on the node loop: delivery is `try_send`, and a full inbound queue drops
//! the message (counted) rather than stalling the socket and, behind it, the sending peer.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use isle_env::{Clock, Listener, SeededRandom};
use isle_types::NodeId;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::fault::{Direction, Faults, Verdict};
use crate::frame::{FrameDecoder, FrameError};
use crate::metrics::{DropReason, NetMetrics};
use crate::transport::{DelayBudget, Inbound, stopped};

/// Most inbound connections served at once; more are closed on accept.
const INBOUND_CONNECTIONS_MAX: usize = 1024;
/// Bytes read from a socket per call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What every reader shares.
pub(crate) struct InboundContext<M> {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) faults: Faults,
    pub(crate) metrics: Arc<NetMetrics>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) delays: Arc<DelayBudget>,
    pub(crate) deliver: mpsc::Sender<Inbound<M>>,
}

/// Accepts connections until shutdown, then stops every reader before returning.
pub(crate) async fn accept_loop<L, M>(
    mut listener: L,
    context: Arc<InboundContext<M>>,
    mut shutdown: watch::Receiver<bool>,
    mut rng: SeededRandom,
) where
    L: Listener,
    M: DeserializeOwned + Clone + Send + 'static,
{
    let mut readers = JoinSet::new();
    loop {
        while readers.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) if readers.len() < INBOUND_CONNECTIONS_MAX => {
                let reader = Reader {
                    context: Arc::clone(&context),
                    shutdown: shutdown.clone(),
                    rng: rng.fork(),
                    peer: None,
                    remote,
                };
                readers.spawn(reader.run(stream));
            }
            Ok((_, remote)) => {
                tracing::warn!(%remote, "too many inbound connections: closing the new one");
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break,
                    () = context.clock.sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    // Release the port before the readers, so a restart can rebind as soon as we return.
    drop(listener);
    readers.shutdown().await;
}

struct Reader<M> {
    context: Arc<InboundContext<M>>,
    shutdown: watch::Receiver<bool>,
    rng: SeededRandom,
    /// Learned from the first valid envelope; labels this connection's metrics.
    peer: Option<NodeId>,
    remote: String,
}

impl<M: DeserializeOwned + Clone + Send + 'static> Reader<M> {
    fn label(&self) -> String {
        self.peer
            .map_or_else(|| "unknown".to_string(), |id| id.to_string())
    }

    async fn run<S: AsyncRead + Unpin>(mut self, mut stream: S) {
        let mut decoder = FrameDecoder::<M>::new(self.context.max_frame_bytes);
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        loop {
            let read = tokio::select! {
                biased;
                () = stopped(&mut self.shutdown) => return,
                () = self.context.clock.sleep(self.context.idle_timeout) => {
                    tracing::debug!(remote = %self.remote, "inbound connection idle: closing");
                    return;
                }
                read = stream.read(&mut chunk) => read,
            };
            let n = match read {
                Ok(0) => return,
                Ok(n) => n,
                Err(error) => {
                    tracing::debug!(remote = %self.remote, %error, "inbound connection failed");
                    return;
                }
            };
            self.context.metrics.bytes_received(&self.label(), n as u64);
            decoder.push(&chunk[..n]);
            if self.drain(&mut decoder).is_break() {
                return;
            }
        }
    }

    /// Handles every complete frame in the decoder; `Break` means close the connection.
    fn drain(&mut self, decoder: &mut FrameDecoder<M>) -> ControlFlow<()> {
        loop {
            match decoder.next_frame() {
                Ok(None) => return ControlFlow::Continue(()),
                Ok(Some(envelope)) => {
                    self.peer = Some(envelope.from);
                    self.accept(Inbound {
                        from: envelope.from,
                        msg: envelope.msg,
                    });
                }
                Err(FrameError::Corrupt { .. }) => self.context.metrics.corrupt(&self.label()),
                Err(error @ (FrameError::Undecodable(_) | FrameError::Encode(_))) => {
                    self.context.metrics.undecodable(&self.label());
                    tracing::debug!(remote = %self.remote, %error, "undecodable frame skipped");
                }
                Err(error @ FrameError::TooLarge { .. }) => {
                    self.context.metrics.oversized(&self.label());
                    tracing::warn!(remote = %self.remote, %error, "closing inbound connection");
                    return ControlFlow::Break(());
                }
            }
        }
    }

    /// Applies inbound faults to one valid message, then hands it to the node.
    fn accept(&mut self, message: Inbound<M>) {
        let faults = &self.context.faults;
        let verdict = faults.decide(message.from, Direction::Inbound, &mut self.rng);
        let label = self.label();
        let metrics = &self.context.metrics;
        if verdict == Verdict::Corrupt {
            // The frame is already verified, so flipping a byte now could not be noticed; count
            // exactly what a byte flipped before verification would have caused.
            metrics.corrupt(&label);
            return;
        }
        metrics.received(&label);
        match verdict {
            Verdict::Deliver | Verdict::Corrupt => offer(&self.context, message, &label),
            Verdict::Drop => metrics.dropped(&label, DropReason::Fault, 1),
            Verdict::Duplicate => {
                let copy = Inbound {
                    from: message.from,
                    msg: message.msg.clone(),
                };
                offer(&self.context, copy, &label);
                offer(&self.context, message, &label);
            }
            Verdict::Delay(delay) => self.hold(message, delay, label),
        }
    }

    /// Delivers `message` after `delay` without holding up this connection.
    fn hold(&self, message: Inbound<M>, delay: Duration, label: String) {
        let Some(permit) = self.context.delays.try_hold() else {
            self.context.metrics.dropped(&label, DropReason::Fault, 1);
            return;
        };
        self.context.metrics.delayed(&label);
        let context = Arc::clone(&self.context);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => {}
                () = context.clock.sleep(delay) => offer(&context, message, &label),
            }
        });
    }
}

fn offer<M>(context: &InboundContext<M>, message: Inbound<M>, label: &str) {
    match context.deliver.try_send(message) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => context.metrics.dropped(label, DropReason::InboundFull, 1),
        // The node stopped reading; it is shutting down and nothing is waiting for this.
        Err(TrySendError::Closed(_)) => {}
    }
}
