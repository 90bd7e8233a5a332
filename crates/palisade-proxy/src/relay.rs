//! Byte relay for CONNECT tunnels.
//!
//! An idle tunnel holds no buffer: each direction waits for readability and only
//! then borrows a buffer from a per-thread free list, returning it as soon as the
//! socket would block. That keeps 10,000 idle tunnels cheap while bulk transfers
//! still move 64 KiB per read.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

const BUF_SIZE: usize = 64 * 1024;
const MAX_FREE: usize = 32;
/// Reads per wake-up before yielding, so one busy tunnel cannot starve a worker.
const READS_PER_TURN: usize = 16;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
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

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    counter: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = Buf::take();
        let mut turns = 0;
        loop {
            match from.try_read(buf.get()) {
                Ok(0) => {
                    let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                    return Ok(());
                }
                Ok(n) => {
                    write_all(to, &buf.get()[..n]).await?;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                    turns += 1;
                    if turns >= READS_PER_TURN {
                        drop(buf);
                        tokio::task::yield_now().await;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
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
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let both = async {
        tokio::try_join!(
            pump(client, upstream, up, &last, start),
            pump(upstream, client, down, &last, start)
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
