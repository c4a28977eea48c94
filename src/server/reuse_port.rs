//! One listening socket per proxy worker on the same port (`SO_REUSEPORT`).
//!
//! With one shared socket every worker's epoll wakes for each new connection and whichever
//! thread runs first takes it, so the split between workers follows scheduling noise. With a
//! socket per worker the kernel spreads connections by their address hash, and a worker never
//! wakes for a connection it will not serve.
//!
//! `SO_REUSEPORT` would also let a second process of the same user join the port silently. So
//! [`bind`] first claims the port with a plain socket: if anything already listens there,
//! claimgate fails to start with "address in use", as it would without the option. Where the
//! option is missing (not Linux or BSD) or a worker's socket cannot be bound, the workers share
//! the first socket instead, which only loses the balancing.

use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// As many connections as the kernel queues per socket before they are refused (tokio's own
/// default for `TcpListener::bind`).
const BACKLOG: u32 = 1024;

fn socket_for(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart may bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// Binds the proxy listener on `addr` so that each worker can add its own socket on the same
/// port with [`sibling`].
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    // The plain bind fails if anything is bound to the port, reuse-port sockets included.
    let claim = TcpListener::bind(addr).await?;
    let bound = claim.local_addr()?;
    if !cfg!(unix) {
        return Ok(claim);
    }
    let socket = socket_for(bound)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    // The plain socket must be gone before the reuse-port one can take the port.
    drop(claim);
    // Taken in between by someone else: that fails here, as the plain bind would have.
    socket.bind(bound)?;
    socket.listen(BACKLOG)
}

/// A second socket on `shared`'s port for one more worker, or `None` if the port cannot be
/// shared (`shared` was bound without `SO_REUSEPORT`, as in tests that bind their own listener,
/// or the platform lacks it). Must run inside the worker's runtime.
pub fn sibling(shared: &std::net::TcpListener) -> Option<TcpListener> {
    #[cfg(unix)]
    {
        let addr = shared.local_addr().ok()?;
        let socket = socket_for(addr).ok()?;
        socket.set_reuseport(true).ok()?;
        socket.bind(addr).ok()?;
        socket.listen(BACKLOG).ok()
    }
    #[cfg(not(unix))]
    {
        let _ = shared;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_claimgate_on_the_port_is_refused() {
        let first = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = first.local_addr().unwrap();
        let error = bind(addr).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn workers_get_their_own_socket_on_the_same_port() {
        let first = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let std = first.into_std().unwrap();
        let second = sibling(&std).expect("a reuse-port sibling");
        assert_eq!(second.local_addr().unwrap(), std.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_plain_listener_is_shared_instead() {
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(sibling(&plain.into_std().unwrap()).is_none());
    }
}
