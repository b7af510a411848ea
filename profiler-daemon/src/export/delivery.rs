//! Delivery of profiles to the server: a bounded queue, retries with backoff and jitter, and
//! the on-disk spool while the server is away. Order is kept: once anything is spooled, newer
//! profiles join the spool behind it, and the spool is replayed oldest first.
//!
//! The server is not trusted to pace us: a `Retry-After` is honoured only up to
//! `--retry-max-backoff`, and while it lasts the profiles wait on disk, not in memory, so that
//! a kill during the wait loses none of them.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, watch};

use super::{
    dump::{write_atomic, DumpDir},
    pyroscope::{Client, RetryAfter, SendError, Upload},
    spool::{Spool, SpoolCounts},
};
use crate::{
    host::dirs::{ensure_private_dir, DirKind},
    targets::KIND_PROFILE_NAMES,
};

/// Spooled profiles older than this are written to the dump dir instead of being sent: the
/// server rejects profiles older than 1 h, and the margin covers clock skew and the send.
const TOO_OLD: Duration = Duration::from_secs(55 * 60);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Retries of one profile before it is spooled.
    pub retries: u32,
    pub max_backoff: Duration,
    /// Profiles waiting in memory; beyond it they go straight to the spool.
    pub queue: usize,
    /// Where spooled profiles too old for the server are moved.
    pub dump_dir: PathBuf,
}

/// Delivery counters, shared with the pipeline thread for its status line.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub split: AtomicU64,
    pub rejected: AtomicU64,
    pub moved_too_old: AtomicU64,
    pub dropped_spool_error: AtomicU64,
    /// Error responses whose body went past `--upload-response-max-bytes` (the rest unread).
    pub responses_truncated: AtomicU64,
    /// 3xx responses: refused, never followed (their profiles count as `rejected`).
    pub redirects: AtomicU64,
    /// `Retry-After` waits longer than `--retry-max-backoff`, cut to it.
    pub retry_after_capped: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Handle used by the pipeline thread to hand profiles over.
pub struct Exporter {
    tx: mpsc::Sender<Upload>,
    spool: Arc<Mutex<Spool>>,
    seq: AtomicU64,
    pub stats: Arc<DeliveryStats>,
    /// A client with new server settings (a reload), taken by the task before its next send.
    next_client: Arc<Mutex<Option<Client>>>,
}

impl Exporter {
    /// New server settings (a reload): the delivery task switches before its next request.
    /// Queued and spooled profiles stay and go to the new server.
    pub fn replace_client(&self, client: Client) {
        *self.next_client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
    }

    /// Starts the delivery task on the current tokio runtime.
    pub fn start(
        client: Client,
        spool: Spool,
        config: DeliveryConfig,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let seq = AtomicU64::new(spool.next_seq());
        let spool = Arc::new(Mutex::new(spool));
        let stats = Arc::new(DeliveryStats::default());
        let next_client = Arc::new(Mutex::new(None));
        let task = Delivery {
            client,
            next_client: Arc::clone(&next_client),
            spool: Arc::clone(&spool),
            stats: Arc::clone(&stats),
            config,
            shutdown,
            rx,
            logged: HashSet::new(),
            outage: false,
            backoff: FIRST_BACKOFF,
            rng: seed(),
        };
        let handle = tokio::spawn(task.run());
        (
            Self {
                tx,
                spool,
                seq,
                stats,
                next_client,
            },
            handle,
        )
    }

    /// Queues one profile; when the queue is full or closed it is spooled, never dropped.
    pub fn submit(
        &self,
        labels: Vec<(String, String)>,
        from: SystemTime,
        until: SystemTime,
        pprof_gz: Vec<u8>,
    ) {
        let nanos = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0)
        };
        let upload = Upload {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            labels,
            from_nanos: nanos(from),
            until_nanos: nanos(until),
            pprof_gz,
        };
        if let Err(err) = self.tx.try_send(upload) {
            let upload = match err {
                mpsc::error::TrySendError::Full(u) | mpsc::error::TrySendError::Closed(u) => u,
            };
            spool_one(&self.spool, &upload, &self.stats);
        }
    }

    /// Counts a profile split into several for the server's limits.
    pub fn count_split(&self) {
        bump(&self.stats.split);
    }

    /// The spool's counters and contents.
    pub fn spool_counts(&self) -> SpoolCounts {
        self.spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts()
    }

    /// One line of delivery counters.
    pub fn summary(&self) -> String {
        summary(&self.stats, &self.spool)
    }
}

fn summary(s: &DeliveryStats, spool: &Mutex<Spool>) -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let spool = spool.lock().unwrap_or_else(|e| e.into_inner()).counts();
    format!(
        "sent={} retried={} spooled={} replayed={} split={} rejected={} moved_too_old={} dropped_spool_full={} dropped_spool_corrupt={} dropped_spool_error={} spool_files={} spool_bytes={} redirects={} retry_after_capped={} responses_truncated={}",
        get(&s.sent),
        get(&s.retried),
        get(&s.spooled),
        get(&s.replayed),
        get(&s.split),
        get(&s.rejected),
        get(&s.moved_too_old),
        spool.dropped_full,
        spool.dropped_corrupt,
        get(&s.dropped_spool_error),
        spool.files,
        spool.bytes,
        get(&s.redirects),
        get(&s.retry_after_capped),
        get(&s.responses_truncated),
    )
}

fn spool_one(spool: &Mutex<Spool>, upload: &Upload, stats: &DeliveryStats) {
    let mut spool = spool.lock().unwrap_or_else(|e| e.into_inner());
    match spool.push(upload) {
        Ok(()) => bump(&stats.spooled),
        Err(err) => {
            bump(&stats.dropped_spool_error);
            tracing::error!("profile lost: {err}");
        }
    }
}

/// What a failed send means for delivery.
enum Failure {
    Retry {
        cause: String,
        retry_after: Option<RetryAfter>,
    },
    /// Not sent again: counted `rejected` and logged once per distinct cause.
    Refused { status: u16, message: String },
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

struct Delivery {
    client: Client,
    next_client: Arc<Mutex<Option<Client>>>,
    spool: Arc<Mutex<Spool>>,
    stats: Arc<DeliveryStats>,
    config: DeliveryConfig,
    shutdown: watch::Receiver<bool>,
    rx: mpsc::Receiver<Upload>,
    /// Rejections already logged (status, message): each distinct cause is logged once.
    logged: HashSet<(u16, String)>,
    /// Whether the server is known to be unreachable (logged once per outage).
    outage: bool,
    backoff: Duration,
    rng: u64,
}

impl Delivery {
    /// Switches to the client of a reload, if there is one.
    fn adopt_new_client(&mut self) {
        let next = self
            .next_client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(client) = next {
            tracing::info!(server = %client.config().url, "delivery uses the reloaded server settings");
            self.client = client;
            self.outage = false;
            self.backoff = FIRST_BACKOFF;
        }
    }

    async fn run(mut self) {
        self.deliver_until_stopped().await;
        // The pipeline's last status line comes before the last window is sent.
        tracing::info!("delivery stopped: {}", summary(&self.stats, &self.spool));
    }

    async fn deliver_until_stopped(&mut self) {
        loop {
            self.adopt_new_client();
            let stopping = *self.shutdown.borrow();
            if let Some(seq) = self.spool_head() {
                if stopping {
                    // Everything not sent is on disk; the next start replays it.
                    return;
                }
                self.replay(seq).await;
                continue;
            }
            let upload = tokio::select! {
                upload = self.rx.recv() => match upload {
                    Some(upload) => upload,
                    None => return,
                },
                _ = self.shutdown.changed(), if !stopping => continue,
            };
            self.deliver(upload).await;
        }
    }

    /// The oldest spooled profile, after moving everything queued behind it.
    fn spool_head(&mut self) -> Option<u64> {
        if self
            .spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return None;
        }
        while let Ok(upload) = self.rx.try_recv() {
            spool_one(&self.spool, &upload, &self.stats);
        }
        self.spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .oldest()
    }

    async fn replay(&mut self, seq: u64) {
        let loaded = self
            .spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .load(seq);
        let upload = match loaded {
            Ok(upload) => upload,
            Err(err) => {
                tracing::warn!("{err}; dropped");
                return;
            }
        };
        if self.too_old(&upload) {
            self.move_to_dump_dir(&upload);
            self.spool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(seq);
            return;
        }
        let result = self.client.send(&upload).await;
        match result.map_err(|e| self.classify(e)) {
            Ok(()) => {
                self.spool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(seq);
                bump(&self.stats.replayed);
                self.recovered();
            }
            Err(Failure::Retry { cause, retry_after }) => {
                bump(&self.stats.retried);
                match retry_after {
                    Some(asked) => self.wait_as_asked(&asked, &cause).await,
                    None => {
                        self.unreachable(&cause);
                        let wait = self.next_backoff();
                        self.sleep(wait).await;
                    }
                }
            }
            Err(Failure::Refused { status, message }) => {
                self.spool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(seq);
                self.rejected(status, message);
            }
        }
    }

    async fn deliver(&mut self, upload: Upload) {
        let mut attempt = 0;
        loop {
            // A retry after a reload goes to the new server.
            self.adopt_new_client();
            let result = self.client.send(&upload).await;
            match result.map_err(|e| self.classify(e)) {
                Ok(()) => {
                    bump(&self.stats.sent);
                    self.recovered();
                    return;
                }
                Err(Failure::Retry {
                    cause,
                    retry_after: Some(asked),
                }) => {
                    // The server names a wait: the profile waits in the spool (and the
                    // queue joins it), from where it is retried once the wait is over.
                    spool_one(&self.spool, &upload, &self.stats);
                    if !*self.shutdown.borrow() {
                        bump(&self.stats.retried);
                        self.wait_as_asked(&asked, &cause).await;
                    }
                    return;
                }
                Err(Failure::Retry {
                    cause,
                    retry_after: None,
                }) => {
                    if attempt >= self.config.retries || *self.shutdown.borrow() {
                        self.unreachable(&cause);
                        spool_one(&self.spool, &upload, &self.stats);
                        return;
                    }
                    attempt += 1;
                    bump(&self.stats.retried);
                    tracing::debug!(attempt, %cause, "upload failed, retrying");
                    let wait = self.next_backoff();
                    self.sleep(wait).await;
                }
                Err(Failure::Refused { status, message }) => {
                    self.rejected(status, message);
                    return;
                }
            }
        }
    }

    /// Counts what the answer needed (a cut body, a redirect) and says what to do next.
    fn classify(&self, err: SendError) -> Failure {
        if err.truncated() {
            bump(&self.stats.responses_truncated);
        }
        match err {
            SendError::Retryable {
                cause, retry_after, ..
            } => Failure::Retry { cause, retry_after },
            SendError::Rejected {
                status, message, ..
            } => Failure::Refused { status, message },
            SendError::Redirected { status, location } => {
                bump(&self.stats.redirects);
                Failure::Refused {
                    status,
                    message: format!(
                        "HTTP {status} redirect to {location}, not followed: point --server at the final address"
                    ),
                }
            }
        }
    }

    /// The wait a `Retry-After` asked for, at least the backoff and at most
    /// `--retry-max-backoff`; logged once per wait. What is queued meanwhile goes to the spool.
    async fn wait_as_asked(&mut self, asked: &RetryAfter, cause: &str) {
        let cap = self.config.max_backoff;
        let wait = self.next_backoff().max(asked.wait.min(cap));
        let spool = self
            .spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dir()
            .to_path_buf();
        if asked.wait > cap {
            bump(&self.stats.retry_after_capped);
            tracing::warn!(
                server = %self.client.config().url,
                "server asked to wait (Retry-After: {}) after {cause}; waiting {wait:?} instead, the --retry-max-backoff cap; profiles wait in the spool at {}",
                asked.value,
                spool.display()
            );
        } else {
            tracing::info!(
                server = %self.client.config().url,
                "server asked to wait (Retry-After: {}) after {cause}; waiting {wait:?}; profiles wait in the spool at {}",
                asked.value,
                spool.display()
            );
        }
        self.wait_spooling(wait).await;
    }

    /// Sleeps like [`Self::sleep`], spooling every profile queued meanwhile.
    async fn wait_spooling(&mut self, wait: Duration) {
        if *self.shutdown.borrow() {
            return;
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        let mut open = true;
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                _ = self.shutdown.changed() => return,
                upload = self.rx.recv(), if open => match upload {
                    Some(upload) => spool_one(&self.spool, &upload, &self.stats),
                    None => open = false,
                },
            }
        }
    }

    fn too_old(&self, upload: &Upload) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64;
        now - upload.from_nanos > TOO_OLD.as_nanos() as i64
    }

    fn move_to_dump_dir(&self, upload: &Upload) {
        let from = UNIX_EPOCH + Duration::from_nanos(upload.from_nanos.max(0) as u64);
        let pid = upload
            .label("pid")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let kind = upload
            .label("__name__")
            .filter(|name| KIND_PROFILE_NAMES.contains(name))
            .unwrap_or("cpu");
        let comm = upload.label("comm").unwrap_or("unknown");
        let name = DumpDir::profile_name(comm, pid, kind, from);
        let name = name.replace(
            &format!(".{kind}."),
            &format!(".{kind}.part{}.", upload.seq),
        );
        let path = self.config.dump_dir.join(name);
        let result = ensure_private_dir(DirKind::Dump, &self.config.dump_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| write_atomic(&path, &upload.pprof_gz).map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                bump(&self.stats.moved_too_old);
                tracing::info!(path = %path.display(), "spooled profile is older than the server accepts (1 h): moved to the dump dir");
            }
            Err(err) => {
                bump(&self.stats.dropped_spool_error);
                tracing::error!("spooled profile too old for the server and not writable to the dump dir: {err}");
            }
        }
    }

    fn unreachable(&mut self, cause: &str) {
        if !self.outage {
            self.outage = true;
            tracing::warn!(
                server = %self.client.config().url,
                "server unreachable ({cause}): profiles go to the spool at {} and are sent when it is back",
                self.spool.lock().unwrap_or_else(|e| e.into_inner()).dir().display()
            );
        }
    }

    fn recovered(&mut self) {
        self.backoff = FIRST_BACKOFF;
        if self.outage {
            self.outage = false;
            tracing::info!(server = %self.client.config().url, "server reachable again; replaying the spool");
        }
    }

    fn rejected(&mut self, status: u16, message: String) {
        bump(&self.stats.rejected);
        if self.logged.len() < 1000 && self.logged.insert((status, message.clone())) {
            tracing::error!(status, "server rejected a profile (not retried): {message}");
        }
    }

    /// Exponential backoff with jitter: a random wait in [b/2, b], b doubling up to the max.
    fn next_backoff(&mut self) -> Duration {
        let base = self.backoff.min(self.config.max_backoff);
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        base.mul_f64(fraction)
    }

    /// Sleeps, waking early on shutdown.
    async fn sleep(&mut self, wait: Duration) {
        if *self.shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.shutdown.changed() => {}
        }
    }
}
