//! How many connections the public listener holds: at most `max_connections` in all and
//! `max_connections_per_address` from one peer address. A connection over either limit is closed
//! as soon as it is accepted, before TLS, so idle or slow clients cannot take every socket (and
//! every file descriptor) knockd has.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum_server::accept::Accept;
use futures::future::{Either, Ready, ready};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// Open connections, in all and per peer address.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: usize,
    per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl ConnectionLimits {
    pub fn new(total: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self { total, per_address, open: Mutex::new((0, HashMap::new())) })
    }

    /// A place for one more connection from `ip`, if both limits allow it.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_address) = &mut *open;
        let mine = by_address.entry(ip).or_default();
        if *total >= self.total || *mine >= self.per_address {
            if *mine == 0 {
                by_address.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Slot { limits: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// One connection's place; given back when the connection is dropped.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_address) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = by_address.get_mut(&self.ip) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                by_address.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream holding its connection's place.
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An acceptor that admits a connection only within the limits, then hands it to `inner` (TLS,
/// or none).
#[derive(Clone, Debug)]
pub struct Limited<A> {
    inner: A,
    limits: Arc<ConnectionLimits>,
}

impl<A> Limited<A> {
    pub fn new(inner: A, limits: Arc<ConnectionLimits>) -> Self {
        Self { inner, limits }
    }
}

impl<S, A: Accept<Counted, S>> Accept<TcpStream, S> for Limited<A> {
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Either<Ready<io::Result<(A::Stream, A::Service)>>, A::Future>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let slot = stream.peer_addr().ok().and_then(|peer| self.limits.take(peer.ip()));
        match slot {
            Some(slot) => {
                Either::Right(self.inner.accept(Counted { inner: stream, _slot: slot }, service))
            }
            // Dropping the stream closes it.
            None => Either::Left(ready(Err(io::Error::other("connection limit reached")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_all_and_per_address_and_places_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = limits.take(a).unwrap();
        let _a2 = limits.take(a).unwrap();
        assert!(limits.take(a).is_none(), "two per address");
        let _b1 = limits.take(b).unwrap();
        assert!(limits.take(b).is_none(), "three in all");
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(limits.take(b).is_some(), "a place came back");
    }
}
