//! The real network: tokio TCP behind the `isle_env::Network` seam.

use std::io;

use isle_env::{Listener, Network};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Pending connections the kernel queues for a listener before `accept`.
const LISTEN_BACKLOG: u32 = 1024;

/// tokio TCP with `TCP_NODELAY` on every stream (frames are small and latency-sensitive).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpNetwork;

impl TcpNetwork {
    /// The TCP network.
    pub fn new() -> Self {
        TcpNetwork
    }
}

/// A bound TCP listening socket.
#[derive(Debug)]
pub struct TcpNetListener {
    inner: TcpListener,
}

impl Network for TcpNetwork {
    type Stream = TcpStream;
    type Listener = TcpNetListener;

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn bind(&self, addr: &str) -> io::Result<TcpNetListener> {
        let mut last_error = None;
        for socket_addr in tokio::net::lookup_host(addr).await? {
            let socket = if socket_addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // A restarted node must rebind its port while old connections sit in TIME_WAIT.
            socket.set_reuseaddr(true)?;
            match socket.bind(socket_addr) {
                Ok(()) => {
                    let inner = socket.listen(LISTEN_BACKLOG)?;
                    return Ok(TcpNetListener { inner });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr} resolved to no address"),
            )
        }))
    }
}

impl Listener for TcpNetListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, String)> {
        let (stream, remote) = self.inner.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, remote.to_string()))
    }

    fn local_addr(&self) -> io::Result<String> {
        Ok(self.inner.local_addr()?.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bind_connect_echo() -> io::Result<()> {
        let net = TcpNetwork::new();
        let mut listener = net.bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut client = net.connect(&addr).await?;
        assert!(client.nodelay()?);
        let (mut server, remote) = listener.accept().await?;
        assert!(remote.starts_with("127.0.0.1:"));
        client.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn rebind_same_port_after_close() -> io::Result<()> {
        let net = TcpNetwork::new();
        let listener = net.bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        drop(listener);
        let again = net.bind(&addr).await?;
        assert_eq!(again.local_addr()?, addr);
        Ok(())
    }
}
