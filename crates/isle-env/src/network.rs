//! The network seam: dial and listen for byte streams. Framing and everything above is Isle's.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// A way to open and accept byte-stream connections (tokio TCP for real, turmoil in simulation).
pub trait Network: Send + Sync + 'static {
    /// A connected, bidirectional byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A bound listening socket.
    type Listener: Listener<Stream = Self::Stream>;

    /// Opens a connection to `addr` (host:port).
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Binds a listener on `addr` (host:port; port 0 picks a free one).
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;
}

/// A listening socket.
pub trait Listener: Send + 'static {
    /// The stream type accepted connections yield.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next inbound connection; returns it with the remote address.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
    /// The address actually bound.
    fn local_addr(&self) -> io::Result<String>;
}
