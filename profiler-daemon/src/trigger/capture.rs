//! Captures for fired triggers: a bounded history of drained intervals supplies the seconds
//! before the trigger, the following intervals the seconds after it. Overlapping triggers on
//! one target share one capture, and no sample is kept twice for a target.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    aggregate::{ProcessProfile, Window},
    trigger::{
        rules::{Scene, Values},
        watch::{Firing, TargetId},
    },
    types::millis_after,
};

/// A kept profile, ready to be written and sent.
#[derive(Clone, Debug)]
pub struct Kept {
    pub target: TargetId,
    pub name: String,
    pub event_id: String,
    /// In firing order; the first names the file.
    pub scenes: Vec<Scene>,
    pub fired_at: SystemTime,
    /// The end of the collect interval whose values fired the first rule: intervals ending
    /// before it are the baseline (`phase=before`), it is `firing`, later ones `after`.
    pub fired_slice_end: SystemTime,
    /// When the post-trigger window of the last firing merged into it ended: the capture was
    /// complete then, and is written at the first collect tick after.
    pub due: SystemTime,
    /// Every sample of the capture, merged per process and kind.
    pub window: Window,
    /// The same samples per collect interval, in order: when each was taken relative to the
    /// firing (the pprof's `phase` and `offset` labels).
    pub timeline: Vec<Window>,
    /// The target's values per collection across the window (the page's plot): when each was
    /// read relative to the firing (ms), at most [`MAX_TIMELINE`].
    pub values: Vec<(i64, Values)>,
    /// False for the first write at the firing, which holds the history up to it; the
    /// complete profile replaces it when the post-trigger window is over.
    pub complete: bool,
}

struct Capture {
    kept: Kept,
    until: SystemTime,
    /// Whether its first, incomplete profile was handed out ([`Captures::take_started`]).
    started: bool,
}

/// Intervals a capture keeps apart for the time labels, and values it keeps for the plot.
const MAX_TIMELINE: usize = 128;

/// A capture's profile as of `now`: its intervals merged per process and kind (in pid order),
/// the window up to `now`.
fn assemble(mut kept: Kept, until: SystemTime, now: SystemTime, complete: bool) -> Kept {
    kept.due = until;
    kept.complete = complete;
    for slice in &kept.timeline {
        kept.window.absorb(slice.clone());
    }
    let w = &mut kept.window;
    for profiles in [
        &mut w.processes,
        &mut w.memory,
        &mut w.offcpu,
        &mut w.threads,
    ] {
        profiles.sort_by_key(|p| p.info.pid);
    }
    kept.window.duration = now.duration_since(kept.window.start).unwrap_or_default();
    kept
}

/// Halves a capture's plotted values (every other one stays, and the firing's), so that a
/// capture firings keep extending is plotted over its whole window at a coarser step.
fn thin(values: &mut Vec<(i64, Values)>) {
    let mut i = 0;
    values.retain(|(at, _)| {
        i += 1;
        i % 2 == 1 || *at == 0
    });
}

/// Merges the two neighbouring intervals of `timeline` that span the least time together,
/// both ending before `fired_end` or both after it.
fn merge_narrowest(timeline: &mut Vec<Window>, fired_end: SystemTime) {
    let end = |w: &Window| w.start + w.duration;
    let side = |w: &Window| end(w).cmp(&fired_end);
    let narrowest = (0..timeline.len().saturating_sub(1))
        .filter(|&i| {
            let (a, b) = (&timeline[i], &timeline[i + 1]);
            side(a) == side(b) && side(a) != std::cmp::Ordering::Equal
        })
        .min_by_key(|&i| {
            end(&timeline[i + 1])
                .duration_since(timeline[i].start)
                .unwrap_or_default()
        });
    if let Some(i) = narrowest {
        let next = timeline.remove(i + 1);
        timeline[i].absorb(next);
    }
}

/// The rules' history at a firing as points of the plot: the last one read at the firing,
/// the others one collect interval apart before it.
fn history_values(recent: &[Values], interval: Duration) -> Vec<(i64, Values)> {
    let step = interval.as_millis() as i64;
    let last = recent.len().saturating_sub(1) as i64;
    recent
        .iter()
        .enumerate()
        .map(|(i, v)| ((i as i64 - last) * step, *v))
        .collect()
}

/// Counters of the trigger stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureStats {
    pub fired: u64,
    /// Triggers merged into a capture already running for the target.
    pub merged: u64,
    pub kept: u64,
    /// History intervals dropped early to stay within `--history-max-bytes`.
    pub history_dropped: u64,
}

pub struct Captures {
    pre: Duration,
    post: Duration,
    max_bytes: usize,
    frequency: u64,
    history: VecDeque<(Window, usize)>,
    history_bytes: usize,
    captures: Vec<Capture>,
    /// End of the last kept window per target, so windows never overlap.
    kept_until: HashMap<TargetId, SystemTime>,
    next_event: u64,
    pub stats: CaptureStats,
}

fn window_bytes(window: &Window) -> usize {
    window
        .processes
        .iter()
        .chain(&window.memory)
        .chain(&window.offcpu)
        .chain(&window.threads)
        .map(ProcessProfile::approx_bytes)
        .sum()
}

impl Captures {
    pub fn new(pre: Duration, post: Duration, max_bytes: usize, frequency: u64) -> Self {
        Self {
            pre,
            post,
            max_bytes,
            frequency,
            history: VecDeque::new(),
            history_bytes: 0,
            captures: Vec::new(),
            kept_until: HashMap::new(),
            next_event: 1,
            stats: CaptureStats::default(),
        }
    }

    /// New pre- and post-trigger durations (a reload); captures already running keep theirs.
    pub fn set_windows(&mut self, pre: Duration, post: Duration) {
        self.pre = pre;
        self.post = post;
    }

    fn selects(&self, target: &TargetId, process: &ProcessProfile) -> bool {
        match target {
            TargetId::Process(pid) => process.info.pid == *pid,
            TargetId::Cgroup(cgroup) => cgroup.contains(&process.info.cgroup),
        }
    }

    fn add(&self, capture: &mut Capture, slice: &Window) {
        let end = slice.start + slice.duration;
        if end <= capture.kept.window.start {
            return;
        }
        let target = &capture.kept.target;
        let select = |profiles: &[ProcessProfile]| -> Vec<ProcessProfile> {
            profiles
                .iter()
                .filter(|p| self.selects(target, p))
                .cloned()
                .collect()
        };
        let part = Window {
            start: slice.start,
            duration: slice.duration,
            frequency: slice.frequency,
            processes: select(&slice.processes),
            memory: select(&slice.memory),
            offcpu: select(&slice.offcpu),
            threads: select(&slice.threads),
            fault_period: slice.fault_period,
        };
        if slice.fault_period != 0 {
            capture.kept.window.fault_period = slice.fault_period;
        }
        let empty = part.processes.is_empty()
            && part.memory.is_empty()
            && part.offcpu.is_empty()
            && part.threads.is_empty();
        if !empty {
            let timeline = &mut capture.kept.timeline;
            timeline.push(part);
            // A capture that firings keep extending: the two neighbours spanning the least
            // time on one side of the firing merge, so the labels coarsen evenly instead of
            // the timeline growing without end, and no interval straddles the firing.
            if timeline.len() > MAX_TIMELINE {
                merge_narrowest(timeline, capture.kept.fired_slice_end);
            }
        }
    }

    /// Starts a capture for a firing, or adds its reasons to the one running for the target.
    pub fn fire(&mut self, firing: Firing, now: SystemTime) {
        self.stats.fired += 1;
        if let Some(capture) = self
            .captures
            .iter_mut()
            .find(|c| c.kept.target == firing.target)
        {
            capture.kept.scenes.extend(firing.scenes);
            capture.until = capture.until.max(now + self.post);
            self.stats.merged += 1;
            return;
        }
        let wanted = now.checked_sub(self.pre).unwrap_or(UNIX_EPOCH);
        let start = self
            .kept_until
            .get(&firing.target)
            .map_or(wanted, |&end| end.max(wanted));
        let event_id = format!(
            "{:x}{:03x}",
            now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            self.next_event % 4096
        );
        self.next_event += 1;
        let mut capture = Capture {
            kept: Kept {
                target: firing.target,
                name: firing.name,
                event_id,
                scenes: firing.scenes,
                fired_at: now,
                fired_slice_end: firing.slice_end,
                due: now + self.post,
                window: Window {
                    start,
                    duration: Duration::ZERO,
                    frequency: self.frequency,
                    processes: Vec::new(),
                    memory: Vec::new(),
                    offcpu: Vec::new(),
                    threads: Vec::new(),
                    fault_period: 0,
                },
                timeline: Vec::new(),
                values: history_values(&firing.recent, firing.interval),
                complete: false,
            },
            until: now + self.post,
            started: false,
        };
        for (slice, _) in &self.history {
            self.add(&mut capture, slice);
        }
        self.captures.push(capture);
    }

    /// Records the values of this collection for every capture started before it (one started
    /// now has them from its firing): `values_of` gives a target's, `None` once it is gone.
    pub fn note_values(
        &mut self,
        now: SystemTime,
        values_of: impl Fn(&TargetId) -> Option<Values>,
    ) {
        for capture in &mut self.captures {
            let kept = &mut capture.kept;
            let at = millis_after(now, kept.fired_at);
            let newer = kept.values.last().is_none_or(|(last, _)| at > *last);
            if !newer {
                continue;
            }
            if let Some(values) = values_of(&kept.target) {
                if kept.values.len() >= MAX_TIMELINE {
                    thin(&mut kept.values);
                }
                kept.values.push((at, values));
            }
        }
    }

    /// Feeds one drained interval; returns the captures that are complete.
    pub fn on_slice(&mut self, slice: Window, now: SystemTime) -> Vec<Kept> {
        let mut captures = std::mem::take(&mut self.captures);
        for capture in &mut captures {
            self.add(capture, &slice);
        }
        let (done, running): (Vec<Capture>, Vec<Capture>) =
            captures.into_iter().partition(|c| now >= c.until);
        self.captures = running;

        let bytes = window_bytes(&slice);
        self.history.push_back((slice, bytes));
        self.history_bytes += bytes;
        let horizon = now
            .checked_sub(self.pre + Duration::from_secs(1))
            .unwrap_or(UNIX_EPOCH);
        while let Some((oldest, bytes)) = self.history.front() {
            let expired = oldest.start + oldest.duration < horizon;
            let over = self.history_bytes > self.max_bytes && self.history.len() > 1;
            if !expired && !over {
                break;
            }
            if !expired {
                self.stats.history_dropped += 1;
            }
            self.history_bytes -= bytes;
            self.history.pop_front();
        }

        done.into_iter()
            .map(|capture| {
                let kept = assemble(capture.kept, capture.until, now, true);
                self.kept_until.insert(kept.target.clone(), now);
                self.stats.kept += 1;
                kept
            })
            .collect()
    }

    /// The captures started since the last call, each as an incomplete profile of what it
    /// holds now (the history up to the firing and the interval that fired it), so that the
    /// person paged does not wait for the post-trigger window to see it.
    pub fn take_started(&mut self, now: SystemTime) -> Vec<Kept> {
        self.captures
            .iter_mut()
            .filter(|c| !c.started)
            .map(|capture| {
                capture.started = true;
                assemble(capture.kept.clone(), capture.until, now, false)
            })
            .collect()
    }

    /// Ends every running capture now (shutdown): what was captured so far is kept.
    pub fn flush(&mut self, now: SystemTime) -> Vec<Kept> {
        for capture in &mut self.captures {
            capture.until = now;
        }
        self.on_slice(
            Window {
                start: now,
                duration: Duration::ZERO,
                frequency: self.frequency,
                processes: Vec::new(),
                memory: Vec::new(),
                offcpu: Vec::new(),
                threads: Vec::new(),
                fault_period: 0,
            },
            now,
        )
    }

    /// Bytes held by the history.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// Forgets the end of a target's last kept window (the target is gone).
    pub fn forget(&mut self, target: &TargetId) {
        self.kept_until.remove(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::tests::{cpu_window, one_frame_profile},
        trigger::rules::Reason,
        types::{Metric, Rule},
    };

    fn slice(start: SystemTime, pid: u32, function: &str, samples: u64) -> Window {
        cpu_window(start, vec![one_frame_profile(pid, "p", function, samples)])
    }

    fn firing(pid: u32, metric: Metric) -> Firing {
        let rule = Rule {
            min: 10,
            diff: 25,
            abs: 70,
            max: 0,
            cooldown: Duration::from_secs(60),
        };
        Firing {
            target: TargetId::Process(pid),
            name: format!("p-{pid}"),
            scenes: vec![Scene {
                metric,
                reason: Reason::OverAbs,
                cur: 90,
                avg: 20,
                rule,
            }],
            recent: (1..=3)
                .map(|cpu| Values {
                    cpu,
                    mem: 0,
                    thread: 1,
                })
                .collect(),
            interval: Duration::from_secs(1),
            slice_end: UNIX_EPOCH,
        }
    }

    fn functions(kept: &Kept) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = kept.window.processes[0]
            .folded()
            .into_iter()
            .map(|(names, count)| (names.join(";"), count))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn capture_holds_the_seconds_before_and_after_the_trigger() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let second = |n: u64| t0 + Duration::from_secs(n);
        let mut captures =
            Captures::new(Duration::from_secs(3), Duration::from_secs(2), 1 << 20, 99);
        // t0..t0+10: "before" in every interval; the spike at 10 fires.
        for n in 0..10 {
            assert!(captures
                .on_slice(slice(second(n), 7, "before", 1), second(n + 1))
                .is_empty());
        }
        captures.fire(firing(7, Metric::Cpu), second(10));
        captures.note_values(second(10), |_| unreachable!("the firing brought them"));
        assert!(captures
            .on_slice(slice(second(10), 7, "spike", 5), second(11))
            .is_empty());
        // At the firing's tick: the history and the spike, incomplete, once.
        let started = captures.take_started(second(11));
        assert_eq!(started.len(), 1);
        assert!(!started[0].complete);
        assert_eq!(
            functions(&started[0]),
            [("before".to_string(), 3), ("spike".to_string(), 5)]
        );
        assert_eq!(started[0].timeline.len(), 4);
        assert!(captures.take_started(second(11)).is_empty());
        // A second rule inside the capture joins it and extends the seconds after.
        captures.fire(firing(7, Metric::Mem), second(11));
        let later = Values {
            cpu: 80,
            mem: 5,
            thread: 2,
        };
        captures.note_values(second(11), |t| {
            (*t == TargetId::Process(7)).then_some(later)
        });
        assert!(captures
            .on_slice(slice(second(11), 7, "after", 2), second(12))
            .is_empty());
        let kept = captures.on_slice(slice(second(12), 7, "after", 1), second(13));
        assert_eq!(kept.len(), 1, "one capture for both rules");
        let kept = &kept[0];
        assert!(kept.complete);
        assert_eq!(
            kept.scenes.iter().map(|s| s.metric).collect::<Vec<_>>(),
            [Metric::Cpu, Metric::Mem]
        );
        assert_eq!(kept.window.start, second(7), "3 s before the firing");
        let plotted: Vec<(i64, u64)> = kept.values.iter().map(|(t, v)| (*t, v.cpu)).collect();
        assert_eq!(plotted, [(-2000, 1), (-1000, 2), (0, 3), (1000, 80)]);
        assert_eq!(kept.window.duration, Duration::from_secs(6));
        assert_eq!(
            functions(kept),
            [
                ("after".to_string(), 3),
                ("before".to_string(), 3),
                ("spike".to_string(), 5)
            ]
        );
        // Later firings start where the last kept window ended: no sample twice.
        captures.fire(firing(7, Metric::Thread), second(14));
        let kept = captures.on_slice(slice(second(13), 7, "later", 1), second(16));
        assert_eq!(kept[0].window.start, second(13));
        assert_eq!(functions(&kept[0]), [("later".to_string(), 1)]);
        assert_eq!(captures.stats.kept, 2);
        assert_eq!(captures.stats.merged, 1);
    }

    #[test]
    fn long_timelines_merge_on_one_side_of_the_firing_and_values_thin() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |n: u64| t0 + Duration::from_secs(n);
        let mut timeline: Vec<Window> = (0..6).map(|n| slice(at(n), 7, "f", 1)).collect();
        // The interval [3, 4) fired. Intervals are 1 s; [0, 2) merges first (the earliest of
        // the narrowest pairs), and never with [3, 4).
        merge_narrowest(&mut timeline, at(4));
        let spans: Vec<(u64, u64)> = timeline
            .iter()
            .map(|w| {
                let from = w.start.duration_since(t0).unwrap().as_secs();
                (from, from + w.duration.as_secs())
            })
            .collect();
        assert_eq!(spans, [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]);
        for _ in 0..3 {
            merge_narrowest(&mut timeline, at(4));
        }
        assert!(
            timeline
                .iter()
                .any(|w| w.start == at(3) && w.duration == Duration::from_secs(1)),
            "the firing interval stays whole"
        );
        let mut values: Vec<(i64, Values)> =
            (-3..=3).map(|i| (i * 1000, Values::default())).collect();
        thin(&mut values);
        let kept: Vec<i64> = values.iter().map(|v| v.0).collect();
        assert_eq!(kept, [-3000, -1000, 0, 1000, 3000]);
    }

    #[test]
    fn history_is_bounded_in_bytes_and_time() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let one = window_bytes(&slice(t0, 1, "x", 1));
        let mut captures = Captures::new(
            Duration::from_secs(100),
            Duration::from_secs(1),
            one * 3,
            99,
        );
        for n in 0..10 {
            captures.on_slice(
                slice(t0 + Duration::from_secs(n), 1, "x", 1),
                t0 + Duration::from_secs(n + 1),
            );
        }
        assert!(captures.history_bytes() <= one * 3);
        assert_eq!(captures.stats.history_dropped, 7);
        let mut captures = Captures::new(
            Duration::from_secs(2),
            Duration::from_secs(1),
            usize::MAX,
            99,
        );
        for n in 0..10 {
            captures.on_slice(
                slice(t0 + Duration::from_secs(n), 1, "x", 1),
                t0 + Duration::from_secs(n + 1),
            );
        }
        assert!(
            captures.history.len() <= 4,
            "only the pre-trigger span is kept"
        );
        assert_eq!(captures.stats.history_dropped, 0);
    }

    #[test]
    fn other_processes_stay_out_of_a_process_capture_and_flush_keeps_partial_captures() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut captures =
            Captures::new(Duration::from_secs(5), Duration::from_secs(5), 1 << 20, 99);
        captures.on_slice(slice(t0, 8, "other", 4), t0 + Duration::from_secs(1));
        captures.fire(firing(7, Metric::Cpu), t0 + Duration::from_secs(1));
        captures.on_slice(
            slice(t0 + Duration::from_secs(1), 7, "mine", 1),
            t0 + Duration::from_secs(2),
        );
        let kept = captures.flush(t0 + Duration::from_secs(2));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].window.processes.len(), 1);
        assert_eq!(kept[0].window.processes[0].info.pid, 7);
    }
}
