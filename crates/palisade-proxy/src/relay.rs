//! Byte relay for CONNECT tunnels.
//!
//! Two constraints shape this module: bulk tunnels should cost little more than
//! a direct connection, and 10,000 idle tunnels should cost almost nothing.
//!
//! - Bulk: each direction moves data with `splice(2)` through a pipe
//!   (socket -> pipe -> socket), so payload pages never enter user space; on
//!   loopback and most NICs the kernel hands pages over instead of copying. If a
//!   pipe cannot be had (descriptor limit), that turn falls back to a copy
//!   through a 64 KiB buffer.
//! - Idle: a direction waits for readability holding neither a pipe nor a
//!   buffer. Only then does it borrow one from a per-thread free list, returning
//!   it as soon as the socket would block (a pipe only once it is empty). Idle
//!   tunnels therefore hold two sockets and nothing else, which matters because
//!   the descriptor limit, not memory, bounds the tunnel count.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

const BUF_SIZE: usize = 64 * 1024;
const MAX_FREE: usize = 32;
/// Pipe capacity asked for (the kernel may grant less; the default is 64 KiB).
const PIPE_SIZE: usize = 256 * 1024;
/// Idle pipes kept per worker thread; each costs two descriptors.
const MAX_FREE_PIPES: usize = 4;
/// Reads per wake-up before yielding, so one busy tunnel cannot starve a worker.
const READS_PER_TURN: usize = 16;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static FREE_PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

struct Buf(Option<Box<[u8]>>);

impl Buf {
    fn take() -> Buf {
        let b = FREE
            .with(|f| f.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        Buf(Some(b))
    }
    fn get(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            FREE.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < MAX_FREE {
                    f.push(b);
                }
            });
        }
    }
}

/// A non-blocking pipe used as the in-kernel buffer of one relay direction.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Capacity granted by the kernel.
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let size = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32))
            .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))
            .map(|n| usize::try_from(n).unwrap_or(BUF_SIZE))?;
        Ok(Pipe { read, write, size })
    }
}

/// A pipe borrowed from the per-thread free list. It goes back only when it is
/// known to be empty; a pipe left holding bytes (after an error) is closed.
struct Lease {
    pipe: Option<Pipe>,
    empty: bool,
}

impl Lease {
    fn take() -> Option<Lease> {
        let pipe = match FREE_PIPES.with(|f| f.borrow_mut().pop()) {
            Some(p) => p,
            None => Pipe::new().ok()?,
        };
        Some(Lease {
            pipe: Some(pipe),
            empty: true,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(p) = self.pipe.take()
            && self.empty
        {
            FREE_PIPES.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < MAX_FREE_PIPES {
                    f.push(p);
                }
            });
        }
    }
}

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both sides closed.
    Closed,
    /// No traffic for the idle timeout.
    Idle,
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What one turn of a direction ended with.
enum Turn {
    /// The source would block (or the turn's budget is used): wait and go again.
    Again,
    /// The source sent FIN.
    Eof,
}

/// One direction of a tunnel.
struct Direction<'a> {
    from: &'a TcpStream,
    to: &'a TcpStream,
    counter: &'a AtomicU64,
    last: &'a AtomicU64,
    start: Instant,
}

impl Direction<'_> {
    fn moved(&self, n: usize) {
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Move bytes with splice(2) until the source would block.
    async fn splice_turn(&self, lease: &mut Lease) -> io::Result<Turn> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        let Some(pipe) = lease.pipe.as_ref() else {
            return Ok(Turn::Again);
        };
        for _ in 0..READS_PER_TURN {
            // The pipe is empty here, so EAGAIN can only mean "socket has no data"
            // and it is right to clear the socket's read readiness.
            let n = match self.from.try_io(Interest::READABLE, || {
                splice(self.from, None, &pipe.write, None, pipe.size, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(0) => return Ok(Turn::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Turn::Again),
                Err(e) => return Err(e),
            };
            lease.empty = false;
            let mut left = n;
            while left > 0 {
                match self.to.try_io(Interest::WRITABLE, || {
                    splice(&pipe.read, None, self.to, None, left, flags).map_err(io::Error::from)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.to.writable().await?,
                    Err(e) => return Err(e),
                }
            }
            lease.empty = true;
            self.moved(n);
        }
        tokio::task::yield_now().await;
        Ok(Turn::Again)
    }

    /// Move bytes through a user-space buffer until the source would block.
    async fn copy_turn(&self) -> io::Result<Turn> {
        let mut buf = Buf::take();
        for _ in 0..READS_PER_TURN {
            match self.from.try_read(buf.get()) {
                Ok(0) => return Ok(Turn::Eof),
                Ok(n) => {
                    write_all(self.to, &buf.get()[..n]).await?;
                    self.moved(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Turn::Again),
                Err(e) => return Err(e),
            }
        }
        drop(buf);
        tokio::task::yield_now().await;
        Ok(Turn::Again)
    }

    async fn run(self, use_splice: bool) -> io::Result<()> {
        loop {
            self.from.readable().await?;
            let turn = match use_splice.then(Lease::take).flatten() {
                Some(mut lease) => self.splice_turn(&mut lease).await?,
                None => self.copy_turn().await?,
            };
            if let Turn::Eof = turn {
                let _ = socket2::SockRef::from(self.to).shutdown(Shutdown::Write);
                return Ok(());
            }
        }
    }
}

/// How tunnel bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// splice(2) through a pipe, falling back to copying when no pipe can be had.
    Splice,
    /// Always copy through a user-space buffer.
    Copy,
}

/// Relay between `client` and `upstream` until both close, either fails, or
/// neither moves a byte for `idle`.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    up: &AtomicU64,
    down: &AtomicU64,
) -> io::Result<TunnelEnd> {
    relay_with(Mode::Splice, client, upstream, idle, up, down).await
}

/// [`relay`] with an explicit [`Mode`] (tests compare both).
pub async fn relay_with(
    mode: Mode,
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    up: &AtomicU64,
    down: &AtomicU64,
) -> io::Result<TunnelEnd> {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let use_splice = mode == Mode::Splice;
    let both = async {
        tokio::try_join!(
            Direction {
                from: client,
                to: upstream,
                counter: up,
                last: &last,
                start
            }
            .run(use_splice),
            Direction {
                from: upstream,
                to: client,
                counter: down,
                last: &last,
                start
            }
            .run(use_splice)
        )
    };
    let watchdog = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = since + idle;
            let now = start.elapsed();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(deadline - now).await;
        }
    };
    tokio::select! {
        r = both => r.map(|_| TunnelEnd::Closed),
        () = watchdog => Ok(TunnelEnd::Idle),
    }
}

/// Write bytes the client sent before the tunnel was set up (pipelined data).
pub async fn forward_prefix(upstream: &TcpStream, data: &[u8]) -> io::Result<()> {
    write_all(upstream, data).await
}
