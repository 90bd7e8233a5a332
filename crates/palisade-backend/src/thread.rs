//! A [`Backend`] for async callers. The cluster backend blocks on a
//! runtime of its own, and tokio refuses to block on a runtime from a
//! thread that is already inside one (a worker or a `spawn_blocking`
//! thread): "Cannot start a runtime from within a runtime". An async
//! server therefore hands its calls to one plain thread that owns the
//! backend (and its connection), one call at a time, and awaits the reply.

use crate::Backend;
use anyhow::{Result, anyhow};
use std::sync::mpsc;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut dyn Backend) + Send>;

/// A backend on its own thread; clones share the thread, which ends when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct BackendThread {
    jobs: mpsc::Sender<Job>,
}

impl BackendThread {
    /// Starts the thread that owns `backend`.
    pub fn spawn(mut backend: impl Backend + Send + 'static) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("palisade-backend".into())
            .spawn(move || {
                for job in queue {
                    job(&mut backend);
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the backend's thread and returns what it returned.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |b| {
            let _ = reply.send(f(b));
        });
        let stopped = || anyhow!("the backend's thread has stopped");
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
