//! On-demand profiles, `/debug/pprof/profile?seconds=N` and its kinds: the listener's
//! requests served from the running sampler, with no second attach. In: [`Request`]s from the
//! listener, and each collect tick's slice of the pipeline (on the pipeline thread). Out: one
//! gzipped pprof per request, of the selected processes over the seconds after it arrived, sent
//! to its reply; a request whose client went away is dropped at the next tick.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::Ordering,
        mpsc::{self, Receiver, SyncSender},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::oneshot;

use super::pprof::PprofStats;
use crate::{
    aggregate::{ProcessProfile, Window},
    encode::pprof::{encode_measured, to_gzip, Measure},
    process::ProcessInfo,
    targets::derive_service_name,
};

/// The profile kinds of the endpoint, by the last part of their path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `profile`: CPU time, as `net/http/pprof`'s.
    Cpu,
    /// `memory`: memory first touched (page faults).
    Memory,
    /// `offcpu`: time blocked off the CPU.
    OffCpu,
    /// `threads`: threads created.
    Threads,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cpu, Kind::Memory, Kind::OffCpu, Kind::Threads];

    /// The kind served at `/debug/pprof/{path}`.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.path() == path)
    }

    pub fn path(self) -> &'static str {
        match self {
            Kind::Cpu => "profile",
            Kind::Memory => "memory",
            Kind::OffCpu => "offcpu",
            Kind::Threads => "threads",
        }
    }

    /// The `--profile` value that turns the kind on.
    pub fn source(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Memory => "memory",
            Kind::OffCpu => "offcpu",
            Kind::Threads => "threads",
        }
    }

    /// What the kind's samples in `window` measure.
    fn measure(self, window: &Window) -> Measure {
        match self {
            Kind::Cpu => Measure::cpu_of(window),
            Kind::Memory => Measure::memory_of(window),
            Kind::OffCpu => Measure::OffCpu,
            Kind::Threads => Measure::Threads,
        }
    }

    fn profiles(self, window: &Window) -> &[ProcessProfile] {
        self.measure(window).profiles_of(window)
    }
}

/// Which processes a request wants: any that matches one of the given pids, cgroups, services
/// or comms; every process when none is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub pids: Vec<u32>,
    /// cgroup v2 paths (`/system.slice/nginx.service`): the cgroup and those below it.
    pub cgroups: Vec<String>,
    /// Service names as the daemon derives them (systemd unit, container id, else comm).
    pub services: Vec<String>,
    pub comms: Vec<String>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.cgroups.is_empty()
            && self.services.is_empty()
            && self.comms.is_empty()
    }

    pub fn matches(&self, info: &ProcessInfo) -> bool {
        if self.is_empty() {
            return true;
        }
        let in_cgroup = |cgroup: &String| {
            let cgroup = cgroup.trim_end_matches('/');
            info.cgroup == cgroup
                || cgroup.is_empty()
                || info
                    .cgroup
                    .strip_prefix(cgroup)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        self.pids.contains(&info.pid)
            || self.comms.contains(&info.comm)
            || self.cgroups.iter().any(in_cgroup)
            || (!self.services.is_empty() && self.services.contains(&derive_service_name(info)))
    }

    /// The selection in words, for the profile's comment.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "every process".to_string();
        }
        let mut parts: Vec<String> = self.pids.iter().map(|p| format!("pid={p}")).collect();
        parts.extend(self.cgroups.iter().map(|c| format!("cgroup={c}")));
        parts.extend(self.services.iter().map(|s| format!("service={s}")));
        parts.extend(self.comms.iter().map(|c| format!("comm={c}")));
        parts.join(" ")
    }
}

/// One request: a kind, a selection and a duration, and where its profile goes.
pub struct Request {
    pub kind: Kind,
    pub selector: Selector,
    pub seconds: Duration,
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// The listener's end of the queue to the pipeline thread.
#[derive(Clone)]
pub struct RequestSender(SyncSender<Request>);

impl RequestSender {
    /// Queues `request`; false when the queue is full or the pipeline has stopped.
    pub fn send(&self, request: Request) -> bool {
        self.0.try_send(request).is_ok()
    }
}

/// A request being collected.
struct Active {
    request: Request,
    start: SystemTime,
    until: Instant,
    processes: BTreeMap<u32, ProcessProfile>,
    /// Distinct stacks merged so far (at most: merging may find some equal).
    stacks: usize,
    frequency: u64,
    fault_period: u64,
}

/// The pipeline's end: collects each request's processes tick by tick.
pub struct OnDemand {
    incoming: Receiver<Request>,
    /// Distinct stacks one request holds (`--max-stacks`, as a window): the samples of
    /// processes beyond it are dropped and counted.
    max_stacks: usize,
    stats: Arc<PprofStats>,
    /// Arrived since the last tick: they start at the next slice.
    arrived: Vec<Request>,
    active: Vec<Active>,
}

/// A queue for `capacity` requests waiting for the next tick, and both its ends.
pub fn channel(
    capacity: usize,
    max_stacks: usize,
    stats: Arc<PprofStats>,
) -> (RequestSender, OnDemand) {
    let (sender, incoming) = mpsc::sync_channel(capacity);
    (
        RequestSender(sender),
        OnDemand {
            incoming,
            max_stacks,
            stats,
            arrived: Vec::new(),
            active: Vec::new(),
        },
    )
}

impl OnDemand {
    /// Takes the requests that arrived; true when any request arrived or is being collected
    /// (the next [`on_slice`](Self::on_slice) then has work).
    pub fn poll(&mut self) -> bool {
        self.arrived.extend(self.incoming.try_iter());
        !self.arrived.is_empty() || !self.active.is_empty()
    }

    /// Feeds one tick's slice to the requests being collected, answers those whose seconds
    /// are over, drops those whose client went away, and starts the ones that arrived: they
    /// collect from the next slice on, which holds only samples taken after they arrived.
    pub fn on_slice(&mut self, slice: &Window, now: Instant, wall: SystemTime) {
        // An abandoned request costs no merge.
        self.active.retain(|a| !a.request.reply.is_closed());
        for active in &mut self.active {
            let selector = &active.request.selector;
            for process in active.request.kind.profiles(slice) {
                if !selector.matches(&process.info) {
                    continue;
                }
                if active.stacks >= self.max_stacks {
                    self.stats
                        .samples_dropped
                        .fetch_add(process.samples, Ordering::Relaxed);
                    continue;
                }
                active.stacks += process.stacks.len();
                active
                    .processes
                    .entry(process.info.pid)
                    .or_default()
                    .merge(process);
            }
            active.frequency = slice.frequency;
            if slice.fault_period != 0 {
                active.fault_period = slice.fault_period;
            }
        }
        // Due within half an interval: a tick that drained faster than the one the request
        // started at would otherwise add a whole interval.
        let slack = slice.duration / 2;
        let (done, running): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|a| now + slack >= a.until);
        self.active = running;
        for active in done {
            let profile = encode(&active, wall);
            // A client that left meanwhile is not an error.
            let _ = active.request.reply.send(profile);
        }
        self.poll();
        for request in std::mem::take(&mut self.arrived) {
            if request.reply.is_closed() {
                continue;
            }
            self.active.push(Active {
                until: now + request.seconds,
                request,
                start: wall,
                processes: BTreeMap::new(),
                stacks: 0,
                frequency: slice.frequency,
                fault_period: slice.fault_period,
            });
        }
    }
}

/// The gzipped pprof of a finished request.
fn encode(active: &Active, wall: SystemTime) -> Vec<u8> {
    let kind = active.request.kind;
    // The window gives the profile its time, duration and rates; the samples are the
    // request's own.
    let window = Window {
        start: active.start,
        duration: wall.duration_since(active.start).unwrap_or_default(),
        frequency: active.frequency,
        processes: Vec::new(),
        memory: Vec::new(),
        offcpu: Vec::new(),
        threads: Vec::new(),
        fault_period: active.fault_period,
    };
    let processes: Vec<&ProcessProfile> = active.processes.values().collect();
    let comment = format!(
        "profilerd on-demand {} profile of {} over {:.1} s",
        kind.path(),
        active.request.selector.describe(),
        window.duration.as_secs_f64()
    );
    to_gzip(&encode_measured(
        &window,
        &processes,
        &[comment],
        kind.measure(&window),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::{cpu_window as slice, one_frame_profile};
    use prost::Message;
    use std::io::Read;

    fn profile_of(pid: u32, function: &str, samples: u64) -> ProcessProfile {
        one_frame_profile(pid, "p", function, samples)
    }

    fn info(pid: u32, comm: &str, cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            comm: comm.to_string(),
            cgroup: cgroup.to_string(),
            ..ProcessInfo::default()
        }
    }

    #[test]
    fn selectors_match_pid_comm_cgroup_and_service() {
        let nginx = info(7, "nginx", "/system.slice/nginx.service");
        let all = Selector::default();
        assert!(all.matches(&nginx));
        let by = |f: fn(&mut Selector)| {
            let mut s = Selector::default();
            f(&mut s);
            s.matches(&nginx)
        };
        assert!(by(|s| s.pids = vec![7]));
        assert!(!by(|s| s.pids = vec![8]));
        assert!(by(|s| s.comms = vec!["nginx".into()]));
        assert!(by(|s| s.cgroups = vec!["/system.slice".into()]));
        assert!(by(|s| s.cgroups = vec!["/system.slice/".into()]));
        assert!(!by(|s| s.cgroups = vec!["/system.sl".into()]));
        assert!(by(|s| s.services = vec!["nginx".into()]));
        assert!(!by(|s| s.services = vec!["other.service".into()]));
    }

    #[test]
    fn a_request_gets_the_selected_samples_of_the_ticks_after_it_arrived() {
        let (sender, mut ondemand) = channel(2, 1000, Arc::default());
        let (reply, mut answer) = oneshot::channel();
        let selector = Selector {
            pids: vec![1],
            ..Selector::default()
        };
        assert!(sender.send(Request {
            kind: Kind::Cpu,
            selector,
            seconds: Duration::from_secs(2),
            reply,
        }));
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let tick = |i: u64| (t0 + Duration::from_secs(i), wall + Duration::from_secs(i));
        // The slice of the tick it arrives at is from before it.
        let (now, w) = tick(0);
        ondemand.on_slice(&slice(w, vec![profile_of(1, "before", 5)]), now, w);
        assert!(ondemand.poll());
        for i in 1..=2 {
            let (now, w) = tick(i);
            let processes = vec![profile_of(1, "hot", 3), profile_of(2, "other", 4)];
            ondemand.on_slice(&slice(w, processes), now, w);
        }
        assert!(!ondemand.poll());
        let bytes = answer.try_recv().expect("answered");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        let profile = crate::pprof_proto::Profile::decode(&raw[..]).unwrap();
        let samples: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(samples, 6, "two ticks of pid 1 only");
    }

    #[test]
    fn a_request_whose_client_left_is_dropped() {
        let (sender, mut ondemand) = channel(1, 1000, Arc::default());
        let (reply, answer) = oneshot::channel();
        let request = Request {
            kind: Kind::Cpu,
            selector: Selector::default(),
            seconds: Duration::from_secs(30),
            reply,
        };
        assert!(sender.send(request));
        let (now, wall) = (Instant::now(), SystemTime::now());
        ondemand.on_slice(&slice(wall, Vec::new()), now, wall);
        assert!(ondemand.poll());
        drop(answer);
        ondemand.on_slice(&slice(wall, Vec::new()), now, wall);
        assert!(!ondemand.poll());
    }

    #[test]
    fn a_request_holds_at_most_max_stacks_and_counts_what_it_left_out() {
        let stats = Arc::new(PprofStats::default());
        let (sender, mut ondemand) = channel(1, 1, Arc::clone(&stats));
        let (reply, mut answer) = oneshot::channel();
        assert!(sender.send(Request {
            kind: Kind::Cpu,
            selector: Selector::default(),
            seconds: Duration::from_secs(1),
            reply,
        }));
        let (t0, wall) = (Instant::now(), SystemTime::now());
        ondemand.on_slice(&slice(wall, Vec::new()), t0, wall);
        let later = t0 + Duration::from_secs(1);
        let processes = vec![profile_of(1, "kept", 3), profile_of(2, "left_out", 4)];
        ondemand.on_slice(&slice(wall, processes), later, wall);
        assert!(answer.try_recv().is_ok(), "answered after one interval");
        assert_eq!(stats.samples_dropped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_full_queue_gives_the_request_back() {
        let (sender, _ondemand) = channel(1, 1000, Arc::default());
        let request = || Request {
            kind: Kind::Cpu,
            selector: Selector::default(),
            seconds: Duration::from_secs(1),
            reply: oneshot::channel().0,
        };
        assert!(sender.send(request()));
        assert!(!sender.send(request()));
    }
}
