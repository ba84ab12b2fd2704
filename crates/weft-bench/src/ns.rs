//! Work done from inside a testbed namespace.
//!
//! Every socket the bench opens towards etcd, weftd or a pod lives in one of the testbed's
//! namespaces: a thread joins the namespace (`setns(CLONE_NEWNET)` affects that thread only)
//! before it creates any socket, and processes it starts inherit the namespace.

use std::fs::File;
use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use futures::future::BoxFuture;
use nix::sched::{CloneFlags, setns};
use weft_testbed::netns_path;

/// Moves the calling thread into the named testbed namespace.
pub fn enter(ns: &str) -> Result<()> {
    let path = netns_path(ns);
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {ns}"))?;
    Ok(())
}

/// Starts a thread that first joins `ns`, then runs `f`.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    let name = ns.to_string();
    std::thread::Builder::new()
        .name(format!("ns:{ns}"))
        .spawn(move || {
            enter(&name)?;
            f()
        })
        .context("spawning a thread")
}

/// Joins a thread started by [`spawn_in`], turning a panic into an error.
pub fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow!("a measurement thread panicked"))?
}

type Job = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A current-thread tokio runtime on a thread inside one namespace. Jobs run as tasks on it,
/// so clients created there (etcd, netlink) keep their sockets in that namespace.
pub struct NsRuntime {
    ns: String,
    tx: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsRuntime {
    pub fn new(ns: &str) -> Result<NsRuntime> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<()>>();
        let name = ns.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("rt:{ns}"))
            .spawn(move || {
                let rt = enter(&name).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building a tokio runtime")
                });
                let rt = match rt {
                    Ok(rt) => {
                        let _ = ready_tx.send(Ok(()));
                        rt
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job());
                    }
                });
            })
            .context("spawning a runtime thread")?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the runtime thread for {ns} died"))??;
        Ok(NsRuntime {
            ns: ns.to_string(),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Starts `f()` as a background task.
    pub fn spawn<F, Fut>(&self, f: F) -> Result<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let job: Job = Box::new(move || Box::pin(f()));
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| anyhow!("the runtime in {} has stopped", self.ns))
    }

    /// Runs `f()` on the runtime and waits for its output.
    pub fn call<R, F, Fut>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.spawn(move || async move {
            let _ = tx.send(f().await);
        })?;
        rx.recv()
            .map_err(|_| anyhow!("a task in netns {} panicked", self.ns))
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        // Closing the channel ends the loop; dropping the runtime cancels background tasks.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
