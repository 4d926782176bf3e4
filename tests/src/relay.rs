//! A TCP relay that forwards every connection to a target address and
//! records all bytes both ways (one buffer per direction of each
//! connection, so a search never spans two streams).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

type Streams = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A recording relay. Dropping it stops accepting and closes every
/// relayed connection.
#[derive(Debug)]
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    streams: Streams,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, rec: &Mutex<Vec<u8>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                lock(rec).extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Relay {
    /// Listen on a free loopback port and forward to `target`.
    ///
    /// # Panics
    /// If it cannot listen.
    #[must_use]
    #[allow(clippy::unwrap_used)]
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let streams: Streams = Arc::default();
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, so, sp) = (streams.clone(), sockets.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let up = Arc::new(Mutex::new(Vec::new()));
                let down = Arc::new(Mutex::new(Vec::new()));
                lock(&st).extend([up.clone(), down.clone()]);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
                    lock(&so).extend([c3, s3]);
                }
                std::thread::spawn(move || pump(client, server, &up));
                std::thread::spawn(move || pump(s2, c2, &down));
            }
        });
        Relay {
            addr,
            streams,
            sockets,
            stop,
        }
    }

    /// Relayed connections so far.
    #[must_use]
    pub fn connections(&self) -> usize {
        lock(&self.streams).len() / 2
    }

    /// The recorded bytes: one buffer per direction of each connection.
    #[must_use]
    pub fn recorded(&self) -> Vec<Vec<u8>> {
        lock(&self.streams)
            .iter()
            .map(|s| lock(s).clone())
            .collect()
    }

    /// Bytes recorded in total.
    #[must_use]
    pub fn total(&self) -> usize {
        lock(&self.streams).iter().map(|s| lock(s).len()).sum()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in lock(&self.sockets).iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
