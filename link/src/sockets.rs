//! The sockets of the peer port: a listener that shares its port with
//! hole-punching dials, on both address families at once.
//!
//! A hole punch (docs/wire.md, "Hole punching") dials *from* the port
//! the node listens on: a NAT that keeps a connection's source port (as
//! most home routers and Linux's `masquerade` do) then opens, for the
//! other node's dial, exactly the port its introducer told it. Both the
//! listener and the dialing sockets set `SO_REUSEADDR` and
//! `SO_REUSEPORT` (Linux lets only sockets of the same user share a
//! port so).

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// An IPv4 peer of a dual-stack socket (`::ffff:a.b.c.d`), as IPv4.
#[must_use]
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Pending connections the kernel queues before `accept`.
const BACKLOG: i32 = 1024;

/// Listen for peers on `addr`. On an IPv6 unspecified address (`[::]`)
/// the socket takes IPv4 too (dual-stack; IPv4 peers appear as
/// `::ffff:a.b.c.d`, which the link layer turns back into IPv4). When
/// this host has no IPv6 at all, `[::]:port` falls back to
/// `0.0.0.0:port`.
///
/// # Errors
/// The bind or listen error (the port taken, no permission).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    match listen_once(addr) {
        Err(e) if is_no_ipv6(&e) && addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            tracing::info!("no IPv6 on this host: listening for peers on IPv4 only");
            listen_once(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                addr.port(),
            ))
        }
        r => r,
    }
}

fn listen_once(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    shared_port(&s)?;
    if addr.is_ipv6() {
        s.set_only_v6(!addr.ip().is_unspecified())?;
    }
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// Whether a failed `[::]` bind is worth an IPv4 retry: any error but
/// the port being taken or forbidden (which IPv4 would meet too). A host
/// without IPv6 says `EAFNOSUPPORT` or `EADDRNOTAVAIL`.
fn is_no_ipv6(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

fn shared_port(s: &Socket) -> io::Result<()> {
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    Ok(())
}

/// One dial from `local_port` (the port the node listens on) to `to`,
/// giving up after `timeout`: the half of a TCP simultaneous open this
/// node does. The kernel resends the SYN on its own; a refusal (the
/// other NAT answered with a reset before its own node's SYN left) is an
/// error the caller retries.
///
/// # Errors
/// The connect error, or `TimedOut`.
pub async fn dial_from(
    local_port: u16,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let (sock, any) = if to.is_ipv4() {
        (TcpSocket::new_v4()?, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    } else {
        (TcpSocket::new_v6()?, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    };
    sock.set_reuseaddr(true)?;
    #[cfg(unix)]
    sock.set_reuseport(true)?;
    sock.bind(SocketAddr::new(any, local_port))?;
    match tokio::time::timeout(timeout, sock.connect(to)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A dial from a listening port leaves from that port (what a NAT
    /// that keeps ports shows the other side), and the listener on that
    /// port still takes ordinary connections. (On loopback the first SYN
    /// always meets the other side's listener: a true simultaneous open
    /// needs two NATs, which the namespace test bed has.)
    #[tokio::test]
    async fn a_dial_leaves_from_the_listening_port() {
        let la = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let lb = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let (a, b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
        let mut sa = dial_from(a.port(), b, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(sa.local_addr().unwrap().port(), a.port());
        let (mut sb, from) = lb.accept().await.unwrap();
        assert_eq!(from, a, "the other side sees the listening port");
        sa.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        sb.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // The same pair again from the other end: that connection exists.
        assert!(dial_from(b.port(), a, Duration::from_secs(5))
            .await
            .is_err());
        let c = TcpStream::connect(a).await.unwrap();
        let (accepted, _) = la.accept().await.unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), c.local_addr().unwrap());
    }

    /// `[::]` takes IPv4 peers too (or falls back to IPv4 without IPv6).
    #[tokio::test]
    async fn dual_stack_listener_takes_ipv4() {
        let l = listen("[::]:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (s, from) = l.accept().await.unwrap();
        assert_eq!(from.ip().to_canonical(), c.local_addr().unwrap().ip());
        drop(s);
    }
}
