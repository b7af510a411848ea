//! `/debug/pprof/`: the on-demand habit of Go users. `/debug/pprof/profile?seconds=N` answers
//! gzipped pprof as `net/http/pprof` does, so `go tool pprof -http=: URL` and `curl -o` work
//! unchanged; `pid=`, `cgroup=`, `service=` and `comm=` (repeatable) pick the processes.
//! The other kinds (`memory`, `offcpu`, `threads`) are served where `--profile` enabled them.
//! In: the request's query. Out: a [`Request`] to the pipeline thread, then its profile.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{Path as UrlPath, RawQuery, State},
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
};
use tokio::sync::oneshot;

use super::{
    ondemand::{Kind, Request, RequestSender, Selector},
    WebState,
};

/// Go's default when `seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;

/// The endpoint's settings and counts, shared with the handlers.
pub struct PprofEndpoint {
    pub sender: RequestSender,
    /// The kinds the sampler collects (`--profile`).
    pub kinds: Vec<Kind>,
    /// `--pprof-max-seconds`.
    pub max_seconds: u64,
    /// `--pprof-max-requests`: requests collected at once.
    pub max_requests: usize,
    /// Longest a profile may take past its seconds (a slow tick, the encoding), in
    /// milliseconds: a reload of `--collect-interval` changes it.
    grace_ms: AtomicU64,
    in_flight: AtomicUsize,
    pub stats: Arc<PprofStats>,
}

/// What became of the requests, totals since start (`/metrics`).
#[derive(Debug, Default)]
pub struct PprofStats {
    pub served: AtomicU64,
    /// 400: a query the endpoint cannot answer.
    pub bad_request: AtomicU64,
    /// 404: a kind `--profile` did not enable.
    pub disabled: AtomicU64,
    /// 503: `--pprof-max-requests` already being collected.
    pub busy: AtomicU64,
    /// The client went away before its profile was ready.
    pub gone: AtomicU64,
    /// 503: the pipeline stopped or did not answer in time.
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
    /// Samples of processes left out of a request that reached `--max-stacks`.
    pub samples_dropped: AtomicU64,
}

impl PprofEndpoint {
    pub fn new(
        sender: RequestSender,
        kinds: Vec<Kind>,
        (max_seconds, max_requests): (u64, usize),
        collect_interval: Duration,
        stats: Arc<PprofStats>,
    ) -> Self {
        let endpoint = Self {
            sender,
            kinds,
            max_seconds,
            max_requests,
            grace_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            stats,
        };
        endpoint.set_grace(collect_interval);
        endpoint
    }

    /// The time a profile may take past its seconds, from the collect interval: a tick late,
    /// a slow drain, the encoding.
    pub fn set_grace(&self, collect_interval: Duration) {
        let grace = collect_interval * 3 + Duration::from_secs(10);
        self.grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }
}

/// One request's place among `--pprof-max-requests`, given back when the handler ends: also
/// when the client goes away and the handler is dropped mid-wait.
struct Slot<'a> {
    endpoint: &'a PprofEndpoint,
    answered: bool,
}

impl<'a> Slot<'a> {
    fn take(endpoint: &'a PprofEndpoint) -> Option<Self> {
        let taken = endpoint
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < endpoint.max_requests).then_some(n + 1)
            });
        taken.ok()?;
        endpoint.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Self {
            endpoint,
            answered: false,
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.endpoint
            .stats
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            self.endpoint.stats.gone.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A parsed query: the seconds and the selection.
#[derive(Debug, PartialEq, Eq)]
struct Query {
    seconds: u64,
    selector: Selector,
}

/// Parses `seconds`, `pid`, `cgroup`, `service` and `comm`; the error is the 400's one line.
fn parse_query(query: &str, max_seconds: u64) -> Result<Query, String> {
    let mut seconds = None;
    let mut selector = Selector::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let nonempty = |what: &str| -> Result<String, String> {
            if value.is_empty() {
                return Err(format!("{what}= is empty: give a value or leave it out"));
            }
            Ok(value.to_string())
        };
        match &*key {
            "seconds" => {
                if seconds.is_some() {
                    return Err("seconds= is given twice: give it once".to_string());
                }
                let n: u64 = value.parse().map_err(|_| {
                    format!("seconds={value:?} is not a whole number of seconds: use 1 to {max_seconds}")
                })?;
                if n == 0 || n > max_seconds {
                    return Err(format!(
                        "seconds={n} is out of range: use 1 to {max_seconds} (--pprof-max-seconds)"
                    ));
                }
                seconds = Some(n);
            }
            "pid" => {
                let pid: u32 = value.parse().ok().filter(|&p| p > 0).ok_or_else(|| {
                    format!("pid={value:?} is not a process id: use a number such as pid=1234")
                })?;
                selector.pids.push(pid);
            }
            "cgroup" => {
                let cgroup = nonempty("cgroup")?;
                if !cgroup.starts_with('/') {
                    return Err(format!(
                        "cgroup={cgroup:?} is not a cgroup v2 path: use one from /proc/PID/cgroup, such as cgroup=/system.slice/nginx.service"
                    ));
                }
                selector.cgroups.push(cgroup);
            }
            "service" => selector.services.push(nonempty("service")?),
            "comm" => selector.comms.push(nonempty("comm")?),
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: use seconds, pid, cgroup, service or comm"
                ))
            }
        }
    }
    Ok(Query {
        seconds: seconds.unwrap_or(DEFAULT_SECONDS.min(max_seconds)),
        selector,
    })
}

fn text(status: StatusCode, line: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{line}\n"),
    )
        .into_response()
}

/// `/debug/pprof/{kind}`.
pub(super) async fn profile(
    State(state): State<Arc<WebState>>,
    UrlPath(path): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(endpoint) = &state.pprof else {
        return text(StatusCode::NOT_FOUND, "no profiles here".to_string());
    };
    let stats = &endpoint.stats;
    let Some(kind) = Kind::from_path(&path) else {
        stats.bad_request.fetch_add(1, Ordering::Relaxed);
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.path()).collect();
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "unknown profile {path:?}: use one of {} (index at /debug/pprof/)",
                known.join(", ")
            ),
        );
    };
    if !endpoint.kinds.contains(&kind) {
        stats.disabled.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "the {} profile is off: start the daemon with --profile including {}",
                kind.path(),
                kind.source()
            ),
        );
    }
    let query = match parse_query(query.as_deref().unwrap_or(""), endpoint.max_seconds) {
        Ok(query) => query,
        Err(line) => {
            stats.bad_request.fetch_add(1, Ordering::Relaxed);
            return text(StatusCode::BAD_REQUEST, line);
        }
    };
    let Some(mut slot) = Slot::take(endpoint) else {
        stats.busy.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} profiles are being collected already (--pprof-max-requests): retry when one is done",
                endpoint.max_requests
            ),
        );
    };
    let seconds = Duration::from_secs(query.seconds);
    let (reply, answer) = oneshot::channel();
    let request = Request {
        kind,
        selector: query.selector,
        seconds,
        reply,
    };
    let failed = |line: &str| {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        text(StatusCode::SERVICE_UNAVAILABLE, line.to_string())
    };
    if !endpoint.sender.send(request) {
        slot.answered = true;
        return failed(
            "the profiler is not sampling (stopping, or its queue is full): retry in a moment",
        );
    }
    let grace = Duration::from_millis(endpoint.grace_ms.load(Ordering::Relaxed));
    let answer = tokio::time::timeout(seconds + grace, answer).await;
    slot.answered = true;
    match answer {
        Ok(Ok(profile)) => {
            stats.served.fetch_add(1, Ordering::Relaxed);
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"profile\"",
                    ),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                profile,
            )
                .into_response()
        }
        Ok(Err(_)) => failed("the profiler stopped before the profile was complete"),
        Err(_) => failed("the profile was not ready in time: the pipeline is overloaded, retry with fewer seconds"),
    }
}

/// `/debug/pprof/`: the kinds, with links and what the parameters do.
pub(super) async fn index(State(state): State<Arc<WebState>>) -> Response {
    let Some(endpoint) = &state.pprof else {
        return text(StatusCode::NOT_FOUND, "no profiles here".to_string());
    };
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>/debug/pprof/</title></head><body>\
         <h1>/debug/pprof/</h1><p>Profiles of the processes on this host, sampled from now for \
         <code>seconds</code> (default 30), as <code>net/http/pprof</code> serves them: \
         <code>go tool pprof -http=: 'http://HOST/debug/pprof/profile?seconds=30&amp;pid=PID'</code>. \
         Pick processes with <code>pid=</code>, <code>cgroup=</code>, <code>service=</code> and \
         <code>comm=</code> (each repeatable; none: every process).</p><table>",
    );
    for kind in Kind::ALL {
        let on = endpoint.kinds.contains(&kind);
        let what = match kind {
            Kind::Cpu => "CPU time",
            Kind::Memory => "memory first touched (page faults)",
            Kind::OffCpu => "time blocked off the CPU",
            Kind::Threads => "threads created",
        };
        let _ = if on {
            write!(
                page,
                "<tr><td><a href=\"/debug/pprof/{0}?seconds=30\">{0}</a></td><td>{what}</td></tr>",
                kind.path()
            )
        } else {
            write!(
                page,
                "<tr><td>{}</td><td>{what}: off (--profile {})</td></tr>",
                kind.path(),
                kind.source()
            )
        };
    }
    page.push_str("</table></body></html>");
    Html(page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_into_seconds_and_selectors() {
        let q = parse_query(
            "seconds=5&pid=12&pid=13&comm=nginx&service=a.service&cgroup=%2Fsystem.slice",
            60,
        )
        .unwrap();
        assert_eq!(q.seconds, 5);
        assert_eq!(q.selector.pids, [12, 13]);
        assert_eq!(q.selector.comms, ["nginx"]);
        assert_eq!(q.selector.services, ["a.service"]);
        assert_eq!(q.selector.cgroups, ["/system.slice"]);
        assert_eq!(parse_query("", 60).unwrap().seconds, 30);
        assert_eq!(parse_query("", 10).unwrap().seconds, 10);
    }

    #[test]
    fn bad_queries_name_the_parameter_and_the_fix() {
        for (query, needle) in [
            ("seconds=0", "seconds=0 is out of range: use 1 to 60"),
            ("seconds=61", "out of range"),
            ("seconds=x", "not a whole number"),
            ("seconds=1&seconds=2", "given twice"),
            ("pid=abc", "not a process id"),
            ("pid=0", "not a process id"),
            ("cgroup=system.slice", "not a cgroup v2 path"),
            ("comm=", "comm= is empty"),
            ("debug=1", "unknown parameter \"debug\""),
        ] {
            let err = parse_query(query, 60).unwrap_err();
            assert!(err.contains(needle), "{query}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
