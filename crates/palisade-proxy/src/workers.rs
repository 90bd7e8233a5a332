//! Thread-per-core worker runtimes.
//!
//! A proxy's per-request work is short and I/O-bound, and a client connection
//! never needs more than one core. Tokio's work-stealing scheduler pays for
//! balance it does not need here: cross-thread queues, and the LIFO slot that
//! lets a woken task jump ahead of the others. Measured on one core of a
//! 2-core machine, a single-threaded runtime served 19% more requests than a
//! one-worker work-stealing runtime, with a p99 about a third lower (see
//! `docs/proxy.md`). The price: a busy or preempted thread cannot hand its
//! connections to an idle one.
//!
//! So the proxy runs one single-threaded runtime per core: the main thread's
//! runtime accepts and serves its share, and each extra [`Workers`] thread runs
//! its own. The acceptor hands every new connection to the next runtime in
//! turn; from then on that connection, its upstream connections and its tunnel
//! stay on that thread.

use std::io;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Extra single-threaded runtimes, each on its own thread, until dropped.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// Start `n` worker threads (0 is allowed: then everything runs on the
    /// caller's runtime).
    pub fn start(n: usize) -> io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            stop: stop.clone(),
        };
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(rt.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("palisade-worker-{}", i + 1))
                .spawn(move || rt.block_on(stop.cancelled()))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Handles to spawn connections onto, one per worker thread.
    pub fn handles(&self) -> Vec<Handle> {
        self.handles.clone()
    }
}

impl Drop for Workers {
    /// Stops the threads; tasks still running on them are dropped.
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The number of cores this process may run on (its CPU affinity), at least 1.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
