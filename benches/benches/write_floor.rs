//! The floor under a lone client's replicated write on this machine
//! (issue #15's "a single client's put p50 ≤ 0.6 ms"): the same hops and
//! syncs a put to a three-member leader makes, with nothing else. No
//! HTTP/2, no Raft, no store: fixed-size frames over loopback TCP between
//! single-threaded tokio runtimes, one per role and each on its own OS
//! thread, and `pwrite` + `fdatasync` into files filled ahead with zeros,
//! as the members' log segments are.
//!
//! One write goes: client → leader; leader → both followers, and to its
//! own sync thread (it hands its sync over and is told when it is done,
//! as a leader's driver does); each follower writes and syncs inline on
//! its runtime's thread, as a follower with a fast disk does, and
//! acknowledges; once its own sync and one acknowledgement are in, the
//! leader answers the client. On the answer's path: two loopback round
//! trips (six messages in all), syncs on three files of one disk, and two
//! thread wake-ups for the leader's sync (the hand-over and the report).
//! Two simplifications: the leader's `pwrite` runs on its sync thread
//! (a member writes on its driver's thread and hands over the sync
//! alone), and a follower that falls behind syncs each frame on its own
//! (a member's one sync covers whatever queued meanwhile).
//!
//! Not a criterion bench: the figures are percentiles of one sequence of
//! writes, each waiting for the one before.
//!
//! It also times the parts alone, so that the floor can be read:
//! `fdatasync` with nothing else running, and a loopback round trip
//! between two runtimes. A member's put cannot be faster than the floor,
//! and what a member adds is its put's p50 minus the floor's, measured
//! in the same run: `benches/kv-cpu` (`LOAD=single MODE=leader`) and this
//! bench, alternating.
//!
//! `cargo bench -p flotilla-benches --bench write_floor` (2,000 writes
//! after 200 unmeasured; `FLOTILLA_FLOOR_TOTAL` changes it). The files go
//! in the temporary directory (`TMPDIR`), where `benches/kv-cpu` puts the
//! members' data. `-- --test` (or a run without `--bench`, as `cargo test
//! --benches` makes) is a quick smoke run.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_benches::smoke_run;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A request's size: an 8-byte key, a 256-byte value.
const FRAME: usize = 264;
/// Bytes each file is filled with ahead of the writes: the writes never
/// grow a file, so a sync flushes data alone (no size change to record).
const FILE_BYTES: u64 = 8 << 20;
/// Writes before the timed ones: connections warm, files touched.
fn warmup() -> usize {
    if smoke_run() { 10 } else { 200 }
}
/// How long a role waits for its peer before the run fails rather than hangs.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn total() -> usize {
    if smoke_run() {
        return 50;
    }
    match std::env::var("FLOTILLA_FLOOR_TOTAL") {
        Ok(v) => match v.parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("FLOTILLA_FLOOR_TOTAL must be a whole number above 0, not '{v}'"),
        },
        Err(_) => 2_000,
    }
}

/// A log file of [`FILE_BYTES`] zeros, synced, and where the next write goes.
struct Log {
    file: File,
    at: u64,
}

impl Log {
    fn create(dir: &Path, name: &str) -> Log {
        let path = dir.join(name);
        let mut file = File::options()
            .create_new(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..FILE_BYTES / zeros.len() as u64 {
            file.write_all(&zeros).expect("filling the log");
        }
        file.sync_all().expect("syncing the filled log");
        Log { file, at: 0 }
    }

    /// Writes `frame` after the last one (wrapping inside the file) and
    /// waits until it is durable.
    fn append(&mut self, frame: &[u8]) {
        if self.at + frame.len() as u64 > FILE_BYTES {
            self.at = 0;
        }
        self.file
            .write_all_at(frame, self.at)
            .expect("writing the log");
        self.file.sync_data().expect("fdatasync");
        self.at += frame.len() as u64;
    }
}

/// Runs `f` on an OS thread of its own with a single-threaded runtime.
fn on_thread<F, T>(name: &str, f: F) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(f)
        })
        .expect("a thread")
}

/// A listener on a loopback port the kernel picks, and its address. A
/// std one: a tokio socket belongs to the runtime it was made on, and
/// each role makes its own ([`accept`]).
fn listen() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("address").to_string();
    (l, addr)
}

async fn accept(l: std::net::TcpListener) -> TcpStream {
    let l = TcpListener::from_std(l).expect("a tokio listener");
    let (s, _) = tokio::time::timeout(STEP_TIMEOUT, l.accept())
        .await
        .expect("a peer connects in time")
        .expect("accept");
    s.set_nodelay(true).expect("nodelay");
    s
}

async fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads one whole frame into `buf`; false at a clean end of stream.
async fn read_frame(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    match tokio::time::timeout(STEP_TIMEOUT, s.read_exact(buf)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Ok(Err(e)) => panic!("reading a frame: {e}"),
        Err(_) => panic!("no frame within {STEP_TIMEOUT:?}"),
    }
}

/// A follower: each frame is written and synced inline, blocking its
/// runtime's thread, then acknowledged with the frame's first 8 bytes (its
/// sequence number).
async fn follower(l: std::net::TcpListener, mut log: Log) {
    let mut s = accept(l).await;
    let mut buf = [0u8; FRAME];
    while read_frame(&mut s, &mut buf).await {
        log.append(&buf);
        s.write_all(&buf[..8]).await.expect("acknowledging");
    }
}

/// The leader: see the module's comment.
async fn leader(l: std::net::TcpListener, followers: [String; 2], mut log: Log) {
    let mut client = accept(l).await;
    let (ack_tx, mut acks) = mpsc::unbounded_channel::<u64>();
    let mut to_followers = Vec::new();
    for addr in &followers {
        let (mut rd, wr) = connect(addr).await.into_split();
        to_followers.push(wr);
        let ack_tx = ack_tx.clone();
        tokio::spawn(async move {
            let mut seq = [0u8; 8];
            while rd.read_exact(&mut seq).await.is_ok() {
                if ack_tx.send(u64::from_le_bytes(seq)).is_err() {
                    break;
                }
            }
        });
    }
    // The readers hold the senders: the channel ends when both followers do.
    drop(ack_tx);
    // The sync thread: syncs what it is handed, tells which write is durable.
    let (job_tx, jobs) = std::sync::mpsc::channel::<[u8; FRAME]>();
    let (synced_tx, mut synced) = mpsc::unbounded_channel::<u64>();
    let syncer = std::thread::Builder::new()
        .name("leader-sync".into())
        .spawn(move || {
            for frame in jobs {
                log.append(&frame);
                let seq = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
                if synced_tx.send(seq).is_err() {
                    break;
                }
            }
        })
        .expect("a thread");
    let mut buf = [0u8; FRAME];
    while read_frame(&mut client, &mut buf).await {
        let seq = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        for f in &mut to_followers {
            f.write_all(&buf).await.expect("sending to a follower");
        }
        job_tx.send(buf).expect("the sync thread runs");
        let (mut own, mut acked) = (false, false);
        while !(own && acked) {
            let wait = async {
                tokio::select! {
                    s = synced.recv() => own |= s.expect("the sync thread died") == seq,
                    s = acks.recv() => acked |= s.expect("both followers are gone") == seq,
                }
            };
            tokio::time::timeout(STEP_TIMEOUT, wait)
                .await
                .expect("a sync or an acknowledgement in time");
        }
        client.write_all(&buf[..8]).await.expect("answering");
    }
    drop(job_tx);
    syncer.join().expect("the sync thread");
}

/// A client: `n` writes one after another, each timed from its send to
/// its answer, after [`warmup`] untimed ones.
async fn client(addr: String, n: usize) -> Vec<Duration> {
    let mut s = connect(&addr).await;
    let mut frame = [7u8; FRAME];
    let mut answer = [0u8; 8];
    let mut took = Vec::with_capacity(n);
    let warmup = warmup() as u64;
    for seq in 0..warmup + n as u64 {
        frame[..8].copy_from_slice(&seq.to_le_bytes());
        let start = Instant::now();
        s.write_all(&frame).await.expect("sending");
        assert!(read_frame(&mut s, &mut answer).await, "the leader left");
        assert_eq!(u64::from_le_bytes(answer), seq, "answers come in order");
        if seq >= warmup {
            took.push(start.elapsed());
        }
    }
    took
}

/// Prints `name`'s p50, p90, p99 and max, in milliseconds.
fn report(name: &str, mut took: Vec<Duration>) {
    took.sort_unstable();
    let at = |q: f64| {
        let i = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1;
        took[i].as_secs_f64() * 1e3
    };
    println!(
        "{name:<34} n={:<6} p50 {:.3} ms  p90 {:.3}  p99 {:.3}  max {:.3}",
        took.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
}

/// `pwrite` + `fdatasync` of one frame, nothing else running.
fn sync_alone(dir: &Path, n: usize) -> Vec<Duration> {
    let mut log = Log::create(dir, "alone");
    let frame = [7u8; FRAME];
    for _ in 0..warmup() {
        log.append(&frame);
    }
    (0..n)
        .map(|_| {
            let start = Instant::now();
            log.append(&frame);
            start.elapsed()
        })
        .collect()
}

/// A frame to another runtime's thread and 8 bytes back, over loopback.
fn round_trip(n: usize) -> Vec<Duration> {
    let (l, addr) = listen();
    let echo = on_thread("echo", async move {
        let mut s = accept(l).await;
        let mut buf = [0u8; FRAME];
        while read_frame(&mut s, &mut buf).await {
            s.write_all(&buf[..8]).await.expect("echo");
        }
    });
    let took = on_thread("client", client(addr, n))
        .join()
        .expect("the client");
    echo.join().expect("the echo");
    took
}

/// The replicated write: see the module's comment.
fn replicated(dir: &Path, n: usize) -> Vec<Duration> {
    let (l_leader, leader_addr) = listen();
    let (l_a, a_addr) = listen();
    let (l_b, b_addr) = listen();
    // Every file filled before any role starts its accept timeout.
    let [log_a, log_b, log_leader] = ["a", "b", "leader"].map(|name| Log::create(dir, name));
    let fa = on_thread("follower-a", follower(l_a, log_a));
    let fb = on_thread("follower-b", follower(l_b, log_b));
    let ld = on_thread("leader", leader(l_leader, [a_addr, b_addr], log_leader));
    let took = on_thread("client", client(leader_addr, n))
        .join()
        .expect("the client");
    ld.join().expect("the leader");
    fa.join().expect("follower a");
    fb.join().expect("follower b");
    took
}

fn main() {
    let n = total();
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!(
        "write floor: {n} writes of {FRAME} B after {} unmeasured, files in {}",
        warmup(),
        dir.path().display()
    );
    report("fdatasync alone", sync_alone(dir.path(), n));
    report("loopback round trip", round_trip(n));
    report(
        "replicated write (3 syncs, 2 RTT)",
        replicated(dir.path(), n),
    );
}
