//! The seam between the run loop and where profiles go: a [`Sink`] takes a kept profile or
//! one process's window and writes or sends it. Two sinks exist: [`DumpSink`] (files and
//! sidecars in the dump dir) and [`ServerSink`] (uploads through the delivery queue).

use std::{cell::OnceCell, path::PathBuf, time::SystemTime};

use thiserror::Error;

use super::{
    delivery::Exporter,
    dump::{DumpDir, DumpError},
    sidecar::{
        window_sidecar_name, KeptSummary, MAX_WINDOW_SIDECARS, SIDECAR_SUFFIX, WINDOW_SIDECAR_ROWS,
    },
};
use crate::{
    aggregate::{ProcessProfile, Window},
    encode::{
        flame_graph_svg, folded_lines,
        pprof::{self, Measure},
        EncodeError,
    },
    pprof_proto,
    targets::{truncate, LabelConfig, KIND_PROFILE_NAMES, MAX_VALUE_LEN},
    trigger::Kept,
    types::{millis_after, utc_timestamp, Metric},
};

/// Why a kept profile's files were not all written.
#[derive(Debug, Error)]
enum KeptFileError {
    #[error(transparent)]
    Dump(#[from] DumpError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("encoding its sidecar failed: {0}")]
    Sidecar(#[from] serde_json::Error),
}

/// A kept profile on its way out, with the pprof comments and the labels in force.
pub struct KeptProfile<'a> {
    pub kept: &'a Kept,
    pub comments: &'a [String],
    pub labels: &'a LabelConfig,
}

impl KeptProfile<'_> {
    /// The metric of the first firing: it names the files and the `trigger` label.
    pub(super) fn metric(&self) -> &'static str {
        self.kept.scenes[0].metric.name()
    }

    pub(super) fn reasons(&self) -> Vec<String> {
        self.kept
            .scenes
            .iter()
            .map(|s| format!("{}: {}", s.metric.name(), s.reason.text()))
            .collect()
    }

    fn processes(&self) -> Vec<&ProcessProfile> {
        self.kept.window.processes.iter().collect()
    }

    /// The profile kind that answers the firing besides CPU: memory growth for mem, thread
    /// creation for thread, when that source took samples; None when the CPU profile answers
    /// (a cpu firing, or the source is off).
    fn answer(&self) -> Option<(Measure, &[ProcessProfile])> {
        let window = &self.kept.window;
        let metric = self.metric();
        let measure = if metric == Metric::Mem.name() {
            Measure::memory_of(window)
        } else if metric == Metric::Thread.name() {
            Measure::Threads
        } else {
            return None;
        };
        let profiles = measure.profiles_of(window);
        (!profiles.is_empty()).then_some((measure, profiles))
    }

    /// The profiles that answer the firing: [`KeptProfile::answer`]'s, else CPU.
    fn answering(&self) -> Vec<&ProcessProfile> {
        match self.answer() {
            Some((_, profiles)) => profiles.iter().collect(),
            None => self.processes(),
        }
    }

    /// The file: the CPU profile, the off-CPU profile of the same window when that source is
    /// on, and for a mem or thread firing the memory-growth or thread-creation profile; the
    /// answer is the default sample type (the last).
    fn pprof(&self) -> pprof_proto::Profile {
        let window = &self.kept.window;
        let cpu = (Measure::cpu_of(window), self.processes());
        let offcpu =
            (!window.offcpu.is_empty()).then(|| (Measure::OffCpu, window.offcpu.iter().collect()));
        let sources: Vec<(Measure, Vec<&ProcessProfile>)> = match self.answer() {
            Some((measure, profiles)) => [
                Some(cpu),
                offcpu,
                Some((measure, profiles.iter().collect())),
            ]
            .into_iter()
            .flatten()
            .collect(),
            None => offcpu.into_iter().chain([cpu]).collect(),
        };
        if self.kept.timeline.is_empty() {
            return pprof::encode_sources(window, &sources, self.comments);
        }
        // The same sources, interval by interval, each labelled with when it was taken.
        let fired = self.kept.fired_at;
        let fired_end = self.kept.fired_slice_end;
        let offset = |slice: &Window| {
            let end = slice.start + slice.duration;
            pprof::SliceTime {
                end_ms: millis_after(end, fired),
                phase: pprof::Phase::of(end, fired_end),
            }
        };
        let timed: Vec<(Measure, Vec<pprof::Timed<'_>>)> = sources
            .iter()
            .map(|(measure, _)| {
                let parts = self.kept.timeline.iter().flat_map(|slice| {
                    let at = offset(slice);
                    measure.profiles_of(slice).iter().map(move |p| (p, at))
                });
                (*measure, parts.collect())
            })
            .collect();
        pprof::encode_timed(window, &timed, self.comments)
    }
}

/// One process's profile of a continuous-mode window. When a server takes it, its parts within
/// the server's limits are made first, and the file reuses a single part: a profile within the
/// limits (the usual case) is encoded once for both.
pub struct WindowProfile<'a> {
    pub window: &'a Window,
    pub process: &'a ProcessProfile,
    pub comments: &'a [String],
    pub labels: &'a LabelConfig,
    /// What its samples measure.
    pub(super) measure: Measure,
    parts: OnceCell<Vec<Vec<u8>>>,
}

impl<'a> WindowProfile<'a> {
    /// The profile of `process`'s samples that `measure` describes; `split`: a server sink
    /// will take the profile, so its parts are made now.
    pub fn new(
        window: &'a Window,
        process: &'a ProcessProfile,
        comments: &'a [String],
        labels: &'a LabelConfig,
        split: bool,
        measure: Measure,
    ) -> Self {
        let profile = Self {
            window,
            process,
            comments,
            labels,
            measure,
            parts: OnceCell::new(),
        };
        if split {
            profile.parts();
        }
        profile
    }

    fn make_parts(&self) -> Vec<Vec<u8>> {
        measured_parts(self.window, self.process, self.comments, self.measure)
    }

    fn parts(&self) -> &[Vec<u8>] {
        self.parts.get_or_init(|| self.make_parts())
    }

    /// The parts, moved out (the server sink runs last and owns them from here).
    fn take_parts(&mut self) -> Vec<Vec<u8>> {
        self.parts.take().unwrap_or_else(|| self.make_parts())
    }

    /// The whole profile, gzipped: the single part if the parts were made and there is one.
    fn whole(&self) -> Vec<u8> {
        match self.parts.get().map(Vec::as_slice) {
            Some([only]) => only.clone(),
            _ => pprof::to_gzip(&pprof::encode_measured(
                self.window,
                &[self.process],
                self.comments,
                self.measure,
            )),
        }
    }
}

/// The series labels of `process`'s profile of `measure`: `__name__` says the kind.
fn series_of(
    labels: &LabelConfig,
    process: &ProcessProfile,
    measure: Measure,
) -> Vec<(String, String)> {
    let mut series = labels.for_process(&process.info);
    if !matches!(measure, Measure::Cpu { .. }) {
        debug_assert!(KIND_PROFILE_NAMES.contains(&measure.name()));
        // `for_process` puts `__name__` first.
        series[0].1 = measure.name().into();
    }
    series
}

/// One process's profile in gzipped parts within the server's limits on samples and bytes.
fn measured_parts(
    window: &Window,
    process: &ProcessProfile,
    comments: &[String],
    measure: Measure,
) -> Vec<Vec<u8>> {
    let limits = (pprof::MAX_SAMPLES, pprof::MAX_BYTES);
    pprof::encode_split(window, process, comments, measure, limits)
        .iter()
        .map(pprof::to_gzip)
        .collect()
}

/// Where profiles go. A sink logs its own failures: a failed write or send never stops the
/// run loop or the other sinks.
pub trait Sink {
    /// Writes or sends a kept profile; returns the file written, if the sink writes files.
    fn kept(&mut self, profile: &KeptProfile<'_>) -> Option<PathBuf>;
    /// Writes or sends one process's window; returns the file written, if any. A sink may
    /// take the encoded parts, so the server's sink comes last.
    fn window(&mut self, profile: &mut WindowProfile<'_>) -> Option<PathBuf>;
    /// Every process of the window starting at `start` went through [`Sink::window`].
    fn window_done(&mut self, _start: SystemTime) {}
}

/// Files in the dump dir: `<metric>.<event>.<time>.pb.gz`, `.svg` and the sidecar for kept
/// profiles, `<comm>-<pid>.cpu.<time>.pb.gz` for windows.
pub struct DumpSink {
    pub dir: DumpDir,
    /// The rows of the window being written, for its sidecar.
    rows: Vec<KeptSummary>,
}

impl DumpSink {
    pub fn new(dir: DumpDir) -> Self {
        Self {
            dir,
            rows: Vec::new(),
        }
    }
}

impl Sink for DumpSink {
    fn kept(&mut self, profile: &KeptProfile<'_>) -> Option<PathBuf> {
        let kept = profile.kept;
        let processes = profile.answering();
        let metric = profile.metric();
        let base = format!(
            "{metric}.{}.{}",
            kept.event_id,
            utc_timestamp(kept.fired_at)
        );
        let pprof_gz = pprof::to_gzip(&profile.pprof());
        let what = match profile.answer() {
            Some((Measure::Memory { .. }, _)) => " (memory growth)",
            Some((Measure::Threads, _)) => " (thread creation)",
            _ => "",
        };
        let title = format!(
            "profilerd: {}{what} — {}",
            kept.name,
            profile.reasons().join("; ")
        );
        let summary = profile.summary(&base, &processes);
        let result = self
            .dir
            .write(&format!("{base}.pb.gz"), &pprof_gz)
            .map_err(KeptFileError::from)
            .and_then(|path| {
                let svg = flame_graph_svg(&folded_lines(&processes), &title)?;
                self.dir.write(&format!("{base}.svg"), &svg)?;
                // The sidecar last: the page lists a profile only once its files exist.
                let sidecar = serde_json::to_vec_pretty(&summary)?;
                self.dir
                    .write(&format!("{base}{SIDECAR_SUFFIX}"), &sidecar)?;
                Ok(path)
            });
        match result {
            Ok(path) => Some(path),
            Err(err) => {
                tracing::error!("kept profile {base} not written: {err}");
                None
            }
        }
    }

    fn window(&mut self, profile: &mut WindowProfile<'_>) -> Option<PathBuf> {
        let info = &profile.process.info;
        let name = DumpDir::profile_name(
            &info.comm,
            info.pid,
            profile.measure.name(),
            profile.window.start,
        );
        match self.dir.write(&name, &profile.whole()) {
            Ok(path) => {
                self.rows.push(profile.summary(&name));
                Some(path)
            }
            Err(err) => {
                tracing::error!("{err}");
                None
            }
        }
    }

    /// A few sidecars list the window's files, [`WINDOW_SIDECAR_ROWS`] each (one per process
    /// would double the files, one per window could grow past what the page reads).
    fn window_done(&mut self, start: SystemTime) {
        let rows = std::mem::take(&mut self.rows);
        let parts = rows.chunks(WINDOW_SIDECAR_ROWS);
        if parts.len() > MAX_WINDOW_SIDECARS {
            tracing::warn!(
                "{} processes in one window: the page lists the first {}",
                rows.len(),
                MAX_WINDOW_SIDECARS * WINDOW_SIDECAR_ROWS
            );
        }
        for (part, rows) in parts.take(MAX_WINDOW_SIDECARS).enumerate() {
            let name = window_sidecar_name(start, part);
            let written = serde_json::to_vec(rows)
                .map_err(KeptFileError::from)
                .and_then(|bytes| Ok(self.dir.write(&name, &bytes)?));
            if let Err(err) = written {
                tracing::error!("{name} not written: {err}");
            }
        }
    }
}

/// Uploads to the Pyroscope server: one series per process, split within the server's limits.
pub struct ServerSink<'a> {
    pub exporter: &'a Exporter,
}

impl ServerSink<'_> {
    fn submit(
        &self,
        parts: Vec<Vec<u8>>,
        series: &[(String, String)],
        from: SystemTime,
        until: SystemTime,
    ) {
        if parts.len() > 1 {
            self.exporter.count_split();
        }
        for part in parts {
            self.exporter.submit(series.to_vec(), from, until, part);
        }
    }
}

impl Sink for ServerSink<'_> {
    fn kept(&mut self, profile: &KeptProfile<'_>) -> Option<PathBuf> {
        // Sent once, complete: the first write at the firing is for the dump dir and the page.
        if !profile.kept.complete {
            return None;
        }
        let window = &profile.kept.window;
        let until = window.start + window.duration;
        let reasons = profile.reasons().join("; ");
        // The CPU profiles, the off-CPU ones, and a mem or thread firing's answer, each as
        // its own profile type.
        let answer = profile.answer().map(|(m, profiles)| (profiles, m));
        let cpu = (window.processes.as_slice(), Measure::cpu_of(window));
        let offcpu = (window.offcpu.as_slice(), Measure::OffCpu);
        for (processes, measure) in [cpu, offcpu].into_iter().chain(answer) {
            for process in processes {
                let mut series = series_of(profile.labels, process, measure);
                series.push(("trigger".into(), profile.metric().into()));
                series.push((
                    "reason".into(),
                    truncate(&reasons, MAX_VALUE_LEN).to_string(),
                ));
                let parts = measured_parts(window, process, profile.comments, measure);
                self.submit(parts, &series, window.start, until);
            }
        }
        None
    }

    fn window(&mut self, profile: &mut WindowProfile<'_>) -> Option<PathBuf> {
        let window = profile.window;
        let series = series_of(profile.labels, profile.process, profile.measure);
        self.submit(
            profile.take_parts(),
            &series,
            window.start,
            window.start + window.duration,
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::aggregate::tests::one_frame_profile;

    fn window() -> Window {
        let process = one_frame_profile(7, "app", "hot", 9);
        Window {
            start: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            duration: Duration::from_secs(15),
            frequency: 99,
            processes: vec![process],
            memory: Vec::new(),
            offcpu: Vec::new(),
            threads: Vec::new(),
            fault_period: 0,
        }
    }

    #[test]
    fn a_window_within_the_server_limits_is_encoded_once_for_both_sinks() {
        let window = window();
        let labels = LabelConfig::new(None, &[]).unwrap();
        let comments = vec!["c".to_string()];
        let shared = WindowProfile::new(
            &window,
            &window.processes[0],
            &comments,
            &labels,
            true,
            Measure::cpu_of(&window),
        );
        assert_eq!(shared.parts().len(), 1);
        assert_eq!(
            shared.whole(),
            shared.parts()[0],
            "the file reuses the part"
        );
        let alone = WindowProfile::new(
            &window,
            &window.processes[0],
            &comments,
            &labels,
            false,
            Measure::cpu_of(&window),
        );
        assert!(
            alone.parts.get().is_none(),
            "no parts made without a server"
        );
        assert_eq!(alone.whole(), shared.whole());
    }

    #[test]
    fn dump_sink_writes_one_file_per_process_window() {
        let dir = std::env::temp_dir().join(format!("profilerd-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut sink = DumpSink {
            rows: Vec::new(),
            dir: DumpDir::open(&dir, 10, 1 << 20).unwrap(),
        };
        let window = window();
        let labels = LabelConfig::new(None, &[]).unwrap();
        let mut profile = WindowProfile::new(
            &window,
            &window.processes[0],
            &[],
            &labels,
            false,
            Measure::cpu_of(&window),
        );
        let path = sink.window(&mut profile).expect("written");
        assert!(path.starts_with(&dir), "{}", path.display());
        assert_eq!(std::fs::read(&path).unwrap(), profile.whole());
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("app-7.cpu."));
        // The window's sidecar lists the file for the page, and is found from its name.
        sink.window_done(profile.window.start);
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let sidecar = super::super::window_sidecars_for(&file)
            .expect("a continuous-mode name")
            .next()
            .unwrap();
        assert_eq!(sidecar, window_sidecar_name(profile.window.start, 0));
        let rows: Vec<KeptSummary> =
            serde_json::from_slice(&std::fs::read(dir.join(&sidecar)).unwrap()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].pprof.as_str(), rows[0].target.as_str()),
            (file.as_str(), "app-7")
        );
        assert_eq!(rows[0].trigger, super::super::CONTINUOUS);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
