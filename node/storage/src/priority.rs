//! The CPU priority of background threads. Encoding and writing a snapshot
//! of a large state, or removing the files a compaction freed, must not
//! take a core from the Raft driver or the request handlers: at the lowest
//! priority that work runs on what the write path leaves idle, and only
//! takes longer when the machine is busy.

/// The nice value of background threads: the lowest priority there is.
pub const BACKGROUND_NICE: i32 = 19;

/// Lowers the calling thread (and the threads it starts later) to
/// [`BACKGROUND_NICE`]. Call it first thing in a background thread. A
/// failure is logged and otherwise ignored: the work is the same, only
/// its priority is not lowered.
pub fn lower_this_thread() {
    if let Err(e) = set_this_thread_nice(BACKGROUND_NICE) {
        tracing::warn!(%e, "cannot lower a background thread's CPU priority");
    }
}

/// Sets the calling thread's nice value (Linux: niceness is per thread).
#[cfg(target_os = "linux")]
fn set_this_thread_nice(nice: i32) -> std::io::Result<()> {
    let tid = rustix::thread::gettid();
    rustix::process::setpriority_process(Some(tid), nice).map_err(std::io::Error::from)
}

/// Elsewhere a process's threads share one nice value: left as it is.
#[cfg(not(target_os = "linux"))]
fn set_this_thread_nice(_nice: i32) -> std::io::Result<()> {
    Ok(())
}

/// The calling thread's nice value.
#[cfg(target_os = "linux")]
pub fn this_thread_nice() -> std::io::Result<i32> {
    let tid = rustix::thread::gettid();
    rustix::process::getpriority_process(Some(tid)).map_err(std::io::Error::from)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = this_thread_nice().expect("own nice value");
        let inside = std::thread::spawn(|| {
            lower_this_thread();
            let own = this_thread_nice().expect("own nice value");
            // A thread it starts inherits the priority.
            let child = std::thread::spawn(|| this_thread_nice().expect("nice"))
                .join()
                .expect("child thread");
            (own, child)
        })
        .join()
        .expect("background thread");
        assert_eq!(inside, (BACKGROUND_NICE, BACKGROUND_NICE));
        assert_eq!(this_thread_nice().expect("own nice value"), before);
    }
}
