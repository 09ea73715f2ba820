//! A thread of the driver's own: started with its first job, fed through a
//! bounded queue, and joined when the driver ends. The log's syncs
//! ([`super::log_sync`]) and the apply of committed runs (`task::Applier`)
//! each run on one.

use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

/// One named worker thread and the queue to it.
pub(super) struct Worker<J> {
    name: String,
    capacity: usize,
    jobs: Option<SyncSender<J>>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static> Worker<J> {
    /// A worker whose thread, once started, is called `name` and whose
    /// queue holds `capacity` jobs.
    pub(super) fn new(name: String, capacity: usize) -> Self {
        Worker {
            name,
            capacity,
            jobs: None,
            thread: None,
        }
    }

    /// The queue to the thread, starting the thread on `body` (which reads
    /// the queue's other end until it closes) if it is not running. An
    /// error when it cannot be started; the caller then does the work
    /// itself.
    pub(super) fn queue<F>(&mut self, body: F) -> std::io::Result<&SyncSender<J>>
    where
        F: FnOnce(Receiver<J>) + Send + 'static,
    {
        if self.jobs.is_none() {
            let (jobs, queue) = std::sync::mpsc::sync_channel(self.capacity);
            let thread = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || body(queue))?;
            self.jobs = Some(jobs);
            self.thread = Some(thread);
        }
        Ok(self.jobs.as_ref().expect("started above"))
    }

    /// Ends the thread: closes its queue (it finishes the jobs already
    /// queued) and waits for it to go, outside the async runtime unless the
    /// driver owns its thread ([`super::task::blocking`]).
    pub(super) fn stop(&mut self, owns_thread: bool) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = super::task::blocking(owns_thread, || thread.join());
        }
    }
}

impl<J> std::fmt::Debug for Worker<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("running", &self.thread.is_some())
            .finish()
    }
}
