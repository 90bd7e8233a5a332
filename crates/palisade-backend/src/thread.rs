//! A [`Backend`] for async callers. The cluster backend blocks on a
//! runtime of its own, which tokio refuses on a thread that drives async
//! tasks ("Cannot start a runtime from within a runtime"); blocking threads
//! may block. An async server therefore hands its calls to one plain thread
//! that owns the backend, with its connection and runtime kept between
//! calls (rather than one backend, runtime and connection per request),
//! one call at a time, and awaits the reply.

use crate::{Backend, Error, Result};
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
        let stopped = || Error::other("the backend's thread has stopped");
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Sqlite;
    use crate::kube::Kube;

    /// The cluster backend blocks on its own runtime; called straight from
    /// an async task of a server's runtime that panics with "Cannot start
    /// a runtime from within a runtime". Through the thread the call
    /// returns (here an error: no kubeconfig points anywhere), where a
    /// panic would show as the thread having stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cluster_backend_answers_from_inside_a_runtime() {
        let thread = BackendThread::spawn(Kube::new().unwrap()).unwrap();
        for _ in 0..2 {
            let answer = thread.call(|b| b.tenants()).await;
            if let Err(e) = &answer {
                assert!(!e.to_string().contains("stopped"), "{e}");
            }
        }
    }

    #[tokio::test]
    async fn a_sqlite_backend_on_the_thread_returns_the_stores_own_errors() {
        let dir = std::env::temp_dir().join(format!("palisade-thread-{}", std::process::id()));
        let thread = BackendThread::spawn(Sqlite::at(dir.join("state.db"))).unwrap();
        let answer = thread.call(|b| b.tenants()).await;
        assert!(
            matches!(
                answer,
                Err(Error::Store(
                    palisade_store::StoreError::NotInitialised { .. }
                ))
            ),
            "{answer:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
