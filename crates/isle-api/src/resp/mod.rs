//! The Redis-compatible (RESP2) endpoint of the AP keyspace, so `redis-cli`,
//! `redis-benchmark` and Redis client libraries work against an Isle node.
//!
//! - [`codec`]: the protocol, sans-IO — an incremental parser of commands (arrays of bulk
//!   strings and inline commands, with limits) and the reply encoder.
//! - `commands`: what each command does to the AP keyspace (see its module docs for the
//!   mapping and where Isle differs from Redis).
//! - [`serve`]: the TCP shell — one task per connection; every complete command in the input
//!   buffer is run in order and the replies go out in one write (pipelining).
//!
//! A client selects a bucket with `SELECT i` (the i-th of [`ApBackend::buckets`]); reads and
//! writes wait for a quorum of replicas unless `ISLE.CONSISTENCY r w` says otherwise.

pub mod codec;
mod commands;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::ap_backend::ApBackend;
use codec::{CommandParser, Limits, write_error};
use commands::{After, Session, Shared};

pub use commands::REDIS_VERSION;

/// Replies buffered beyond this are written out before the next command runs, so a long
/// pipeline does not grow the output without bound.
const FLUSH_AT: usize = 64 << 10;

/// Serves RESP2 clients on `listener` from `backend` until `shutdown` completes; then stops
/// accepting and closes every connection (a command in flight is abandoned).
pub async fn serve<B: ApBackend>(
    backend: B,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let shared = Arc::new(Shared::new(port));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        debug!(%peer, %err, "resp: TCP_NODELAY not set");
                    }
                    let (backend, shared) = (backend.clone(), shared.clone());
                    let mut stopped = stopped.clone();
                    connections.spawn(async move {
                        tokio::select! {
                            biased;
                            _ = stopped.wait_for(|stop| *stop) => {}
                            () = connection(backend, shared, stream, peer) => {}
                        }
                    });
                }
                Err(err) => {
                    warn!(%err, "resp: accept failed");
                    tokio::task::yield_now().await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    stop.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One client connection, from accept to close.
async fn connection<B: ApBackend, S: AsyncRead + AsyncWrite + Unpin>(
    backend: B,
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
) {
    let mut conn = Connection::new(backend, shared, peer.to_string());
    if let Err(err) = conn.run(stream).await {
        debug!(%peer, %err, "resp: connection ended");
    }
}

/// Where [`Connection::process`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Every complete command ran: read more input.
    Read,
    /// The output is full: write it, then run more commands.
    More,
    /// Write the output, then close the connection.
    Close,
}

/// A connection's protocol state: the parser, the session and the backend. Driven by bytes in,
/// producing bytes out, so tests can run it without a socket.
struct Connection<B> {
    backend: B,
    shared: Arc<Shared>,
    session: Session,
    parser: CommandParser,
}

impl<B> Drop for Connection<B> {
    fn drop(&mut self) {
        self.shared.disconnect(&self.session);
    }
}

impl<B: ApBackend> Connection<B> {
    fn new(backend: B, shared: Arc<Shared>, addr: String) -> Self {
        let session = shared.connect(addr);
        Connection {
            backend,
            shared,
            session,
            parser: CommandParser::new(Limits::default()),
        }
    }

    /// Runs the complete commands buffered, appending the replies to `out`, until the buffer
    /// holds no complete command ([`Step::Read`]), `out` holds `flush_at` bytes ([`Step::More`])
    /// or the connection must close after `QUIT` or a protocol error ([`Step::Close`]).
    async fn process(&mut self, out: &mut Vec<u8>, flush_at: usize) -> Step {
        while out.len() < flush_at {
            match self.parser.next_command() {
                Ok(Some(args)) => {
                    let (reply, after) =
                        commands::execute(&self.backend, &self.shared, &mut self.session, args)
                            .await;
                    reply.encode(out);
                    if after == After::Close {
                        return Step::Close;
                    }
                }
                Ok(None) => return Step::Read,
                Err(err) => {
                    write_error(out, &format!("ERR {err}"));
                    return Step::Close;
                }
            }
        }
        Step::More
    }

    /// Serves the connection until the client closes it, sends `QUIT` or breaks the protocol.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(FLUSH_AT);
        loop {
            let step = self.process(&mut out, FLUSH_AT).await;
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
            match step {
                Step::Close => return stream.shutdown().await,
                Step::More => continue,
                Step::Read => {}
            }
            if stream.read_buf(self.parser.read_buffer()).await? == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
