//! The simulator's side of a connection's socket: each read stamped with the kernel's
//! receive time, so that a request's TTFT counts from when it reached the host (a server
//! that was asleep or busy when it came would otherwise bill its own lateness to the
//! client, and `kvbench calibrate` would report it as the harness's overhead); and the
//! `--close-after-stream` gate, which stops reading once a streamed response ended.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeValLike as _;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A connection's streamed response ended (`--close-after-stream`).
#[derive(Debug, Default)]
pub(crate) struct StreamEnded {
    pub ended: AtomicBool,
    pub notify: tokio::sync::Notify,
}

/// When the latest bytes read from a connection reached the host: the kernel's receive
/// timestamp (`SO_TIMESTAMPNS`, ns since the Unix epoch), 0 before any.
#[derive(Debug, Default)]
pub(crate) struct Arrival(AtomicI64);

impl Arrival {
    /// The latest read's arrival on the monotonic clock: a request's TTFT counts from
    /// there, not from when a busy or sleeping server got round to reading it. Now when the
    /// kernel gave no stamp, or one not within the last second (the wall clock moved).
    pub fn instant(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let stamp = self.0.load(Ordering::Acquire);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        match wall - stamp {
            late if stamp > 0 && (0..1_000_000_000).contains(&late) => now
                .checked_sub(Duration::from_nanos(late as u64))
                .unwrap_or(now),
            _ => now,
        }
    }
}

/// Asks for receive stamps on the listening socket. Accepted connections inherit the
/// option, and the kernel switches its stamping on when the first socket asks (as deferred
/// work): asked at start, it is on before the first request comes, whose bytes would
/// otherwise arrive unstamped and be timed from when they were read.
pub(crate) fn stamp_accepted(listener: &tokio::net::TcpListener) {
    if let Err(e) = setsockopt(listener, sockopt::ReceiveTimestampns, &true) {
        tracing::debug!(error = %e, "no kernel receive timestamps");
    }
}

/// The connection's socket: it stamps each read with the kernel's receive time
/// ([`Arrival`]) and stops reading once a streamed response ended (`ended`).
pub(crate) struct Gate {
    inner: TcpStream,
    ended: Option<Arc<StreamEnded>>,
    arrival: Arc<Arrival>,
}

impl Gate {
    pub fn new(inner: TcpStream, ended: Option<Arc<StreamEnded>>, arrival: Arc<Arrival>) -> Gate {
        // Without the option every read is "now" (Arrival::instant).
        if let Err(e) = setsockopt(&inner, sockopt::ReceiveTimestampns, &true) {
            tracing::debug!(error = %e, "no kernel receive timestamps");
        }
        Gate {
            inner,
            ended,
            arrival,
        }
    }
}

/// One read with its kernel receive timestamp, if the kernel gave one.
fn recv_stamped(fd: RawFd, dst: &mut [u8]) -> std::io::Result<(usize, Option<i64>)> {
    let mut iov = [IoSliceMut::new(dst)];
    let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::empty())
        .map_err(std::io::Error::from)?;
    let stamp = msg.cmsgs().ok().and_then(|mut all| {
        all.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(t) => Some(t.num_nanoseconds()),
            _ => None,
        })
    });
    Ok((msg.bytes, stamp))
}

impl tokio::io::AsyncRead for Gate {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self
            .ended
            .as_ref()
            .is_some_and(|e| e.ended.load(Ordering::Acquire))
        {
            // Never woken: the connection is dropped after CLOSE_DELAY.
            return std::task::Poll::Pending;
        }
        let this = self.get_mut();
        loop {
            std::task::ready!(this.inner.poll_read_ready(cx))?;
            let fd = this.inner.as_raw_fd();
            let dst = buf.initialize_unfilled();
            match this
                .inner
                .try_io(Interest::READABLE, || recv_stamped(fd, dst))
            {
                Ok((n, stamp)) => {
                    if let Some(t) = stamp.filter(|_| n > 0) {
                        this.arrival.0.store(t, Ordering::Release);
                    }
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for Gate {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
