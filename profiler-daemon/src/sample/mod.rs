//! Loads the BPF sampler, attaches it to `cpu-clock` on every online CPU, and drains its maps.
//! In: the embedded BPF object and the filter (pids, cgroups). Out: [`Drained`] counts and
//! stacks per collect interval, kernel counters as deltas, and new-process notifications.
//!
//! Hand-over: the BPF program writes into the map set selected by `Control::generation`. A drain
//! flips the generation, waits a grace period for programs already running on other CPUs to
//! finish, then reads and empties the set nobody writes any more. Counters are cumulative in
//! the kernel and turned into deltas here, so a late increment is never lost, only reported in
//! the next drain.

use std::{
    collections::HashMap as StdHashMap,
    io,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent,
    },
    util::online_cpus,
    Ebpf, EbpfLoader,
};
use profiler_common::{
    Control, Counters, NewProcess, SampleKey, Stack, CONTROL_MAP, COUNTERS_MAP, COUNTER_COUNT,
    COUNTS_MAPS, FAULTS_PROGRAM_NAME, FILTER_CGROUPS_MAP, FILTER_PIDS_MAP, INLINE_PIDS,
    KERNEL_STACKS_MAPS, KNOWN_PIDS_MAP, LOG_EVENTS, LOG_GATE_MAP, NEW_PROCESS_RING, PIDS_IN_MAP,
    PROGRAM_NAME, USER_STACKS_MAPS,
};
mod batch;
mod drained;
mod error;
mod offcpu;
mod raw;
mod tables;

use batch::BatchMap;
pub use drained::{CounterDelta, Drained, StackRef};
pub use error::SamplerError;
use error::{classify_load, classify_program, classify_source};
pub use offcpu::OffCpuConfig;
pub use tables::{UnwindMaps, UnwindSizes};

/// How long a drain waits after flipping the generation before it reads the old map set.
/// A sampling program runs for microseconds; the margin covers a vCPU descheduled mid-sample.
const GRACE: Duration = Duration::from_millis(5);

/// A cgroup v2 directory selected by the in-kernel filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupSelector {
    /// The cgroup id (inode number of the cgroup2 directory).
    pub id: u64,
    /// Depth below the cgroup2 root (the root itself is level 0).
    pub level: u32,
}

/// What to sample and how big the kernel maps are.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    pub frequency: u64,
    pub pids: Vec<u32>,
    pub cgroups: Vec<CgroupSelector>,
    /// Entries of each counts map (one per generation).
    pub counts_map_entries: u32,
    /// Entries of each user-stack map (one per generation).
    pub stack_map_entries: u32,
    /// Entries of each kernel-stack map (one per generation).
    pub kernel_stack_map_entries: u32,
    /// Processes remembered by the kernel as already announced.
    pub known_pids_entries: u32,
    /// Capacity of the pid and the cgroup filter maps (a reload may grow the filters up to it).
    pub filter_entries: u32,
    /// Size of the new-process ring buffer in bytes (power of two, multiple of the page size).
    pub notify_ring_bytes: u32,
    /// The unwind maps' sizes; None walks user stacks with frame pointers only.
    pub unwind: Option<UnwindSizes>,
    /// Page faults per memory-growth sample; None: no memory-growth source.
    pub fault_period: Option<u64>,
    /// The off-CPU source; None: off.
    pub offcpu: Option<OffCpuConfig>,
    /// The thread-creation source.
    pub threads: bool,
}

/// Forwards the BPF program's aya-log records to `tracing`, under the `bpf` target.
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = record.args().to_string();
        match record.level() {
            log::Level::Error => tracing::error!(target: "bpf", "{text}"),
            log::Level::Warn => tracing::warn!(target: "bpf", "{text}"),
            log::Level::Info => tracing::info!(target: "bpf", "{text}"),
            log::Level::Debug => tracing::debug!(target: "bpf", "{text}"),
            log::Level::Trace => tracing::trace!(target: "bpf", "{text}"),
        }
    }

    fn flush(&self) {}
}

/// The loaded and attached sampler. Dropping it detaches the programs.
pub struct Sampler {
    _ebpf: Ebpf,
    counts: [HashMap<MapData, SampleKey, u64>; 2],
    kernel_stacks: [HashMap<MapData, u64, Stack>; 2],
    user_stacks: [HashMap<MapData, u64, Stack>; 2],
    pid_filter: HashMap<MapData, u32, u8>,
    cgroup_filter: HashMap<MapData, u64, u8>,
    log_gate: PerCpuArray<MapData, u32>,
    /// Possible CPUs (the length of per-CPU map values).
    possible_cpus: usize,
    /// Log lines of the BPF program (aya-log), forwarded to `tracing`; `None` if unavailable.
    logger: Option<aya_log::EbpfLogger<TracingLog>>,
    filter_entries: u32,
    /// The pids and cgroups the kernel filter holds now.
    filter: (Vec<u32>, Vec<CgroupSelector>),
    /// Per generation: the counts, kernel-stack and user-stack maps' descriptors for batch
    /// drains.
    batch: [[BatchMap; 3]; 2],
    /// False once the kernel refused a batch drain (older than 5.6).
    batch_drain: bool,
    counters: PerCpuArray<MapData, Counters>,
    control: Array<MapData, Control>,
    known_pids: HashMap<MapData, u32, u8>,
    ring: RingBuf<MapData>,
    generation: u32,
    /// The filters, written with every generation flip.
    control_block: Control,
    /// Last cumulative counters read per generation, to compute deltas.
    seen: [[u64; COUNTER_COUNT]; 2],
    cpus: usize,
    frequency: u64,
    fault_period: Option<u64>,
    /// The off-CPU source's stack maps and period when it is on.
    offcpu: Option<offcpu::OffCpu>,
    /// Whether the thread-creation source is on.
    threads: bool,
    /// The unwind maps' writers until [`Sampler::take_unwind_maps`] hands them over.
    unwind: Option<UnwindMaps>,
}

impl Sampler {
    /// Loads the embedded BPF object and fills the filters; nothing is sampled until
    /// [`Sampler::attach`].
    pub fn load(object: &[u8], config: &SamplerConfig) -> Result<Self, SamplerError> {
        let control_block = control_block(config);
        let (mut ebpf, filter_entries) = load(object, config)?;
        let (pid_filter, cgroup_filter) = filters(&mut ebpf, config)?;

        let mut batch: [Vec<BatchMap>; 2] = Default::default();
        let mut counts = Vec::new();
        let mut kernel_stacks = Vec::new();
        let mut user_stacks = Vec::new();
        for generation in 0..2 {
            let (map, fd) = take_batched(&mut ebpf, COUNTS_MAPS[generation])?;
            counts.push(map);
            batch[generation].push(fd);
            let (map, fd) = take_batched(&mut ebpf, KERNEL_STACKS_MAPS[generation])?;
            kernel_stacks.push(map);
            batch[generation].push(fd);
            let (map, fd) = take_batched(&mut ebpf, USER_STACKS_MAPS[generation])?;
            user_stacks.push(map);
            batch[generation].push(fd);
        }
        let (counts, kernel_stacks, user_stacks) =
            (array(counts), array(kernel_stacks), array(user_stacks));
        let batch = batch.map(array);
        let counters = take(&mut ebpf, COUNTERS_MAP)?;
        let mut control: Array<MapData, Control> = take(&mut ebpf, CONTROL_MAP)?;
        control
            .set(0, control_block, 0)
            .map_err(|source| SamplerError::Map {
                map: CONTROL_MAP,
                source,
            })?;
        let known_pids = take(&mut ebpf, KNOWN_PIDS_MAP)?;
        let log_gate = take(&mut ebpf, LOG_GATE_MAP)?;
        let logger = match aya_log::EbpfLogger::init_with_logger(&mut ebpf, TracingLog) {
            Ok(logger) => Some(logger),
            Err(err) => {
                tracing::warn!("BPF log lines will not reach this log: {err}");
                None
            }
        };
        let ring = take(&mut ebpf, NEW_PROCESS_RING)?;
        let offcpu = match config.offcpu {
            Some(offcpu) => Some(offcpu::OffCpu::take(&mut ebpf, offcpu.period)?),
            None => None,
        };
        let unwind = match config.unwind {
            Some(sizes) => {
                let maps = tables::prepare(&mut ebpf, sizes)?;
                if config.threads {
                    raw::prepare_unwinder(&mut ebpf)?;
                }
                Some(maps)
            }
            None => None,
        };

        Ok(Self {
            pid_filter,
            cgroup_filter,
            log_gate,
            possible_cpus: aya::util::nr_cpus().map_err(|(_, err)| SamplerError::Cpus(err))?,
            logger,
            filter_entries,
            filter: (config.pids.clone(), config.cgroups.clone()),
            _ebpf: ebpf,
            counts,
            kernel_stacks,
            user_stacks,
            batch,
            batch_drain: true,
            counters,
            control,
            known_pids,
            ring,
            generation: 0,
            control_block,
            seen: [[0; COUNTER_COUNT]; 2],
            cpus: 0,
            frequency: config.frequency,
            fault_period: config.fault_period,
            offcpu,
            threads: config.threads,
            unwind,
        })
    }

    /// Attaches the sampler to `cpu-clock` on every online CPU: sampling starts.
    /// With a fault period, also attaches the memory-growth program to `page-faults`, and with
    /// the off-CPU source its programs.
    pub fn attach(&mut self) -> Result<(), SamplerError> {
        self.cpus = attach(&mut self._ebpf, self.frequency)?.len();
        if let Some(period) = self.fault_period {
            attach_faults(&mut self._ebpf, period)?;
        }
        if let Some(offcpu) = &self.offcpu {
            offcpu.attach(&mut self._ebpf)?;
        }
        if self.threads {
            raw::attach_threads(&mut self._ebpf)?;
        }
        Ok(())
    }

    /// The writers of the unwind maps, once (None when unwinding with tables is off).
    pub fn take_unwind_maps(&mut self) -> Option<UnwindMaps> {
        self.unwind.take()
    }

    /// Number of CPUs sampled.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// File descriptor that becomes readable when a new process was announced.
    pub fn notify_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// File descriptor that becomes readable when the BPF program logged something.
    pub fn log_fd(&self) -> Option<RawFd> {
        self.logger.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Writes what the BPF program logged to this process's log.
    pub fn flush_logs(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }

    /// tgids seen for the first time since they were last forgotten.
    pub fn new_processes(&mut self) -> Vec<u32> {
        let mut pids = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<NewProcess>() {
                // SAFETY: the ring carries NewProcess records written by our program.
                let event: NewProcess =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<NewProcess>()) };
                pids.push(event.tgid);
            }
        }
        pids
    }

    /// Lets the kernel announce `tgid` again (after it exited, its number may be reused).
    pub fn forget_process(&mut self, tgid: u32) {
        let _ = self.known_pids.remove(&tgid);
    }

    /// Changes which processes are sampled (a reload). New entries go in before the control
    /// block switches to them and old ones leave after it, so no sample of a process selected
    /// both before and after is lost.
    pub fn set_filters(
        &mut self,
        pids: &[u32],
        cgroups: &[CgroupSelector],
    ) -> Result<(), SamplerError> {
        for (what, count) in [("pids", pids.len()), ("cgroups", cgroups.len())] {
            if count > self.filter_entries as usize {
                return Err(SamplerError::FilterFull {
                    what,
                    count,
                    capacity: self.filter_entries,
                });
            }
        }
        let map_err = |map| move |source| SamplerError::Map { map, source };
        for pid in pids {
            self.pid_filter
                .insert(pid, 1, 0)
                .map_err(map_err(FILTER_PIDS_MAP))?;
        }
        for cgroup in cgroups {
            self.cgroup_filter
                .insert(cgroup.id, 1, 0)
                .map_err(map_err(FILTER_CGROUPS_MAP))?;
        }
        self.control_block = Control {
            unwind: self.control_block.unwind,
            unwind_cache_mask: self.control_block.unwind_cache_mask,
            offcpu_min_us: self.control_block.offcpu_min_us,
            offcpu_period: self.control_block.offcpu_period,
            ..filter_block(pids, cgroups)
        };
        let block = Control {
            generation: self.generation,
            ..self.control_block
        };
        self.control
            .set(0, block, 0)
            .map_err(map_err(CONTROL_MAP))?;
        let (old_pids, old_cgroups) =
            std::mem::replace(&mut self.filter, (pids.to_vec(), cgroups.to_vec()));
        for pid in old_pids.iter().filter(|p| !pids.contains(p)) {
            let _ = self.pid_filter.remove(pid);
        }
        for cgroup in old_cgroups.iter().filter(|c| !cgroups.contains(c)) {
            let _ = self.cgroup_filter.remove(&cgroup.id);
        }
        Ok(())
    }

    /// Flips the generation and empties the map set that was being written.
    pub fn drain(&mut self) -> Result<Drained, SamplerError> {
        let started = Instant::now();
        let old = self.generation;
        self.generation ^= 1;
        let block = Control {
            generation: self.generation,
            ..self.control_block
        };
        self.control
            .set(0, block, 0)
            .map_err(|source| SamplerError::Map {
                map: CONTROL_MAP,
                source,
            })?;
        std::thread::sleep(GRACE);

        let index = old as usize;
        let mut samples = Vec::new();
        let mut kernel_stacks = StdHashMap::new();
        let mut user_stacks = StdHashMap::new();
        if self.batch_drain {
            if let Err(err) =
                self.drain_batched(index, &mut samples, &mut kernel_stacks, &mut user_stacks)
            {
                self.batch_drain = false;
                if err.kind() == io::ErrorKind::Unsupported {
                    tracing::info!("this kernel has no batch map operations (Linux 5.6): draining element by element");
                } else {
                    tracing::warn!(
                        "batch drain failed ({err}): draining element by element from now on"
                    );
                }
            }
        }
        // Element by element: the fallback, and whatever a failed batch drain left behind
        // (a batch drain that succeeded emptied the maps).
        if !self.batch_drain {
            for entry in self.counts[index].iter() {
                let (key, count) = entry.map_err(|source| SamplerError::Map {
                    map: COUNTS_MAPS[index],
                    source,
                })?;
                samples.push((key, count));
            }
            for (key, _) in &samples {
                // A key already gone cannot happen (nobody else deletes); ignore to keep draining.
                let _ = self.counts[index].remove(key);
            }
            for (map, out) in [
                (&mut self.kernel_stacks[index], &mut kernel_stacks),
                (&mut self.user_stacks[index], &mut user_stacks),
            ] {
                let keys: Vec<u64> = map.keys().filter_map(Result::ok).collect();
                for hash in &keys {
                    if let Ok(stack) = map.get(hash, 0) {
                        out.insert(*hash, stack_ips(&stack));
                    }
                    let _ = map.remove(hash);
                }
            }
        }
        let counts_entries = samples.len();
        let entries = [kernel_stacks.len(), user_stacks.len()];
        if let Some(offcpu) = &self.offcpu {
            offcpu.resolve(&samples, &mut user_stacks, &mut kernel_stacks);
        }

        let counters = self.counter_delta(old)?;
        // Lets each CPU log each condition once more in the next interval.
        for event in 0..LOG_EVENTS {
            if let Ok(zeros) = PerCpuValues::try_from(vec![0u32; self.possible_cpus]) {
                let _ = self.log_gate.set(event, zeros, 0);
            }
        }
        self.flush_logs();
        Ok(Drained {
            samples,
            user_stacks,
            kernel_stacks,
            counters,
            counts_entries,
            stack_entries: entries[1],
            kernel_stack_entries: entries[0],
            duration: started.elapsed(),
        })
    }

    /// Empties the map set `index` with batch calls.
    fn drain_batched(
        &self,
        index: usize,
        samples: &mut Vec<(SampleKey, u64)>,
        kernel_stacks: &mut StdHashMap<u64, Vec<u64>>,
        user_stacks: &mut StdHashMap<u64, Vec<u64>>,
    ) -> io::Result<()> {
        let [counts, kernel, user] = &self.batch[index];
        counts.drain(|key: SampleKey, count: &u64| samples.push((key, *count)))?;
        kernel.drain(|hash: u64, stack: &Stack| {
            kernel_stacks.insert(hash, stack_ips(stack));
        })?;
        user.drain(|hash: u64, stack: &Stack| {
            user_stacks.insert(hash, stack_ips(stack));
        })
    }

    /// Counter increments of the just-drained generation since it was last drained. Only that
    /// generation is read (its perf-event and its raw-tracepoint entries), so the counters
    /// describe exactly the samples drained with them.
    fn counter_delta(&mut self, generation: u32) -> Result<CounterDelta, SamplerError> {
        let mut total = [0u64; COUNTER_COUNT];
        for index in [generation, generation | 2] {
            let per_cpu = self
                .counters
                .get(&index, 0)
                .map_err(|source| SamplerError::Map {
                    map: COUNTERS_MAP,
                    source,
                })?;
            for cpu in per_cpu.iter() {
                for (sum, value) in total.iter_mut().zip(cpu.values) {
                    *sum += value;
                }
            }
        }
        let seen = &mut self.seen[generation as usize];
        let mut delta = CounterDelta::default();
        for i in 0..COUNTER_COUNT {
            delta.0[i] = total[i].saturating_sub(seen[i]);
        }
        *seen = total;
        Ok(delta)
    }
}

/// Loads the object with every map sized from `config`; returns it and the filter capacity.
fn load(object: &[u8], config: &SamplerConfig) -> Result<(Ebpf, u32), SamplerError> {
    let filter_entries = config
        .filter_entries
        .max(config.pids.len() as u32)
        .max(config.cgroups.len() as u32)
        .max(1);
    // Each sized map with the flag that sizes it, so that a size the kernel refuses is
    // reported by its flag.
    let mut sizes: Vec<(&str, &'static str, u32)> = Vec::new();
    for name in COUNTS_MAPS {
        sizes.push((name, "--counts-map-entries", config.counts_map_entries));
    }
    for name in KERNEL_STACKS_MAPS {
        sizes.push((
            name,
            "--kernel-stack-map-entries",
            config.kernel_stack_map_entries,
        ));
    }
    for name in USER_STACKS_MAPS {
        sizes.push((name, "--stack-map-entries", config.stack_map_entries));
    }
    sizes.push((FILTER_PIDS_MAP, "--max-filter-entries", filter_entries));
    sizes.push((FILTER_CGROUPS_MAP, "--max-filter-entries", filter_entries));
    sizes.push((KNOWN_PIDS_MAP, "--max-processes", config.known_pids_entries));
    sizes.extend(offcpu::map_sizes(config));
    if let Some(unwind) = &config.unwind {
        sizes.extend(tables::map_sizes(unwind));
    }
    let mut loader = EbpfLoader::new();
    for &(name, _, entries) in &sizes {
        loader.map_max_entries(name, entries);
    }
    loader.map_max_entries(NEW_PROCESS_RING, config.notify_ring_bytes);
    let ebpf = loader
        .load(object)
        .map_err(|err| classify_load(&err, &sizes))?;
    Ok((ebpf, filter_entries))
}

/// Loads the perf-event program into the kernel and attaches it to `cpu-clock` on every
/// online CPU; returns those CPUs.
fn attach(ebpf: &mut Ebpf, frequency: u64) -> Result<Vec<u32>, SamplerError> {
    let event = SoftwareEvent::CpuClock;
    let policy = SamplePolicy::Frequency(frequency);
    attach_software(ebpf, PROGRAM_NAME, event, policy, &|err| {
        classify_program(err, frequency)
    })
}

/// Attaches the memory-growth program to the `page-faults` software event on every online
/// CPU, one sample every `period` faults.
fn attach_faults(ebpf: &mut Ebpf, period: u64) -> Result<(), SamplerError> {
    let event = SoftwareEvent::PageFaults;
    let policy = SamplePolicy::Period(period);
    let classify = |err: &_| classify_source(err, SamplerError::FaultsUnavailable);
    attach_software(ebpf, FAULTS_PROGRAM_NAME, event, policy, &classify).map(|_| ())
}

/// Loads perf-event program `name` and attaches it to software `event` on every online CPU;
/// returns those CPUs. `classify` names the cause of a failure.
pub(super) fn attach_software(
    ebpf: &mut Ebpf,
    name: &str,
    event: SoftwareEvent,
    policy: SamplePolicy,
    classify: &dyn Fn(&aya::programs::ProgramError) -> SamplerError,
) -> Result<Vec<u32>, SamplerError> {
    let program: &mut PerfEvent = ebpf
        .program_mut(name)
        .ok_or_else(|| SamplerError::Load(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|err| SamplerError::Load(format!("{err}")))?;
    program.load().map_err(|err| classify(&err))?;
    let cpus = online_cpus().map_err(|(_, err)| SamplerError::Cpus(err))?;
    for &cpu in &cpus {
        program
            .attach(
                PerfEventConfig::Software(event),
                PerfEventScope::AllProcessesOneCpu { cpu },
                policy,
                true,
            )
            .map_err(|err| classify(&err))?;
    }
    Ok(cpus)
}

fn control_block(config: &SamplerConfig) -> Control {
    Control {
        unwind: u32::from(config.unwind.is_some()),
        unwind_cache_mask: config.unwind.map_or(0, |sizes| sizes.cache - 1),
        offcpu_min_us: config.offcpu.map_or(0, |c| c.min_block_us()),
        offcpu_period: config.offcpu.map_or(1, |c| c.period),
        ..filter_block(&config.pids, &config.cgroups)
    }
}

/// The pid and cgroup filter maps, filled from `config`.
#[allow(clippy::type_complexity)]
fn filters(
    ebpf: &mut Ebpf,
    config: &SamplerConfig,
) -> Result<(HashMap<MapData, u32, u8>, HashMap<MapData, u64, u8>), SamplerError> {
    let mut pid_filter: HashMap<MapData, u32, u8> = take(ebpf, FILTER_PIDS_MAP)?;
    for pid in &config.pids {
        pid_filter
            .insert(pid, 1, 0)
            .map_err(|source| SamplerError::Map {
                map: FILTER_PIDS_MAP,
                source,
            })?;
    }
    let mut cgroup_filter: HashMap<MapData, u64, u8> = take(ebpf, FILTER_CGROUPS_MAP)?;
    for cgroup in &config.cgroups {
        cgroup_filter
            .insert(cgroup.id, 1, 0)
            .map_err(|source| SamplerError::Map {
                map: FILTER_CGROUPS_MAP,
                source,
            })?;
    }
    Ok((pid_filter, cgroup_filter))
}

/// The control block's filter fields for these pids and cgroups (generation 0).
fn filter_block(pids: &[u32], cgroups: &[CgroupSelector]) -> Control {
    let mut control = Control::default();
    if pids.len() > INLINE_PIDS {
        control.pid_count = PIDS_IN_MAP;
    } else {
        control.pid_count = pids.len() as u32;
        control.pids[..pids.len()].copy_from_slice(pids);
    }
    if !cgroups.is_empty() {
        control.cgroup_filter = 1;
        control.cgroup_min_level = cgroups.iter().map(|c| c.level).min().unwrap_or(0);
        control.cgroup_max_level = cgroups.iter().map(|c| c.level).max().unwrap_or(0);
    }
    control
}

pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, SamplerError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| SamplerError::Load(format!("map {name} missing from the BPF object")))?;
    T::try_from(map).map_err(|source| SamplerError::Map { map: name, source })
}

/// `items` as an array; the caller pushed exactly `N`.
fn array<T, const N: usize>(items: Vec<T>) -> [T; N] {
    items
        .try_into()
        .unwrap_or_else(|_| unreachable!("built with exactly {N} items"))
}

/// The instruction pointers a stack-map value holds, leaf first.
pub(super) fn stack_ips(stack: &Stack) -> Vec<u64> {
    let len = (stack.len as usize).min(stack.ips.len());
    stack.ips[..len].to_vec()
}

/// Takes a hash map out of `ebpf` together with a descriptor for batch drains.
fn take_batched<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<(T, BatchMap), SamplerError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| SamplerError::Load(format!("map {name} missing from the BPF object")))?;
    let batch = BatchMap::of(&map)
        .ok_or_else(|| SamplerError::Load(format!("map {name} is not a hash map")))?;
    let map = T::try_from(map).map_err(|source| SamplerError::Map { map: name, source })?;
    Ok((map, batch))
}
