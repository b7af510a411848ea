//! The `/debug/pprof/` endpoint's families: what became of each request, and how many are
//! being collected.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{advance, Outcome, U64Gauge};
use crate::serve::pprof::PprofStats;

#[derive(Default)]
pub(super) struct PprofFamilies {
    requests: Family<Outcome, Counter>,
    in_flight: U64Gauge,
    samples_dropped: Counter,
}

impl PprofFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "profilerd_pprof_requests",
            "Requests to /debug/pprof/ profiles by outcome: served; bad_request (400); disabled (404, a kind --profile did not enable); busy (503, --pprof-max-requests being collected); gone (the client left before its profile was ready); failed (503, the pipeline stopped or did not answer in time)",
            self.requests.clone(),
        );
        r.register(
            "profilerd_pprof_requests_in_flight",
            "Profiles being collected for /debug/pprof/ (bounded by --pprof-max-requests)",
            self.in_flight.clone(),
        );
        r.register(
            "profilerd_pprof_samples_dropped",
            "Samples of processes left out of a /debug/pprof/ profile that already held --max-stacks distinct stacks",
            self.samples_dropped.clone(),
        );
    }

    pub(super) fn apply(&self, s: &PprofStats) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (outcome, total) in [
            ("served", load(&s.served)),
            ("bad_request", load(&s.bad_request)),
            ("disabled", load(&s.disabled)),
            ("busy", load(&s.busy)),
            ("gone", load(&s.gone)),
            ("failed", load(&s.failed)),
        ] {
            advance(&self.requests.get_or_create(&Outcome { outcome }), total);
        }
        self.in_flight.set(load(&s.in_flight));
        advance(&self.samples_dropped, load(&s.samples_dropped));
    }
}
