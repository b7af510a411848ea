//! The user-stack unwinder for code without frame pointers: each frame's return address and
//! caller registers come from the row of its file's unwind table (built by the daemon from
//! `.eh_frame`), found through the process's mapping list and the file's page index. Frames
//! without a usable row are walked with frame pointers, frame by frame. The walk runs
//! [`FRAMES_PER_CALL`] frames per program run and tail-calls itself for depth.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, perf_event, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
    programs::{PerfEventContext, RawTracePointContext},
};
use profiler_common::{
    cfa, rbp, unwind_cache_index, unwind_cache_key, Counter, NewProcess, Stack, UnwindCacheEntry,
    UnwindMapping, UnwindMappings, UnwindPage, UnwindRefresh, UnwindRow, UnwindState, KIND_THREADS,
    MAX_STACK_DEPTH, REASON_MAP_CHANGED, UNWIND_MAPPING_STEPS, UNWIND_MAX_MAPPINGS,
    UNWIND_MAX_REFRESHES, UNWIND_PAGE_BITS, UNWIND_REFRESH_GAP_NS, UNWIND_ROW_STEPS,
};

use crate::{
    bump, counters_index, finish, finish_sample, mix, walk_frame_pointers, Source, COUNTERS,
    MIN_FRAME_ADDRESS, NEW_PROCESS, SCRATCH,
};

#[map]
static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, 0);
#[map]
static UNWIND_PAGES: Array<UnwindPage> = Array::with_max_entries(1, 0);
#[map]
pub(crate) static UNWIND_MAPPINGS: HashMap<u32, UnwindMappings> = HashMap::with_max_entries(1, 0);
#[map]
pub(crate) static UNWIND_STATE: PerCpuArray<UnwindState> = PerCpuArray::with_max_entries(2, 0);
#[map]
pub(crate) static UNWIND_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// The raw-tracepoint unwinder (tail calls stay within one program type).
#[map]
pub(crate) static UNWIND_PROGRAMS_TP: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
static UNWIND_REFRESH: LruHashMap<u32, UnwindRefresh> = LruHashMap::with_max_entries(1, 0);
#[map]
static UNWIND_ROW_CACHE: PerCpuArray<UnwindCacheEntry> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static UNWIND_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// Frames per program run: with the kernel's 33 tail calls, well over [`MAX_STACK_DEPTH`].
const FRAMES_PER_CALL: usize = 6;
/// Tail calls one sample may use (the kernel allows 33).
const MAX_TAIL_CALLS: u32 = 30;

/// What one frame step decided.
enum Step {
    /// The caller's registers are in the state: go on.
    Next,
    /// The walk is over (outermost frame, unreadable memory, depth reached).
    Done,
}

#[perf_event]
pub fn unwind_user(ctx: PerfEventContext) -> u32 {
    walk(&ctx)
}

/// [`unwind_user`] for the samples of raw tracepoints (thread creation).
#[raw_tracepoint]
pub fn unwind_user_tp(ctx: RawTracePointContext) -> i32 {
    walk(&ctx) as i32
}

/// Walks up to [`FRAMES_PER_CALL`] frames, then tail-calls itself or ends the sample.
#[inline(always)]
fn walk<C: Source>(ctx: &C) -> u32 {
    let Some(state) = UNWIND_STATE.get_ptr_mut(C::SLOT) else {
        return 0;
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(C::SLOT) else {
        return 0;
    };
    // SAFETY: this CPU's values for this kind of program, which is not re-entered on one
    // CPU; the tail call that brought us here keeps the sample's state.
    let (state, scratch) = unsafe { (&mut *state, &mut *scratch) };
    let Some(counters) = COUNTERS.get_ptr_mut(counters_index::<C>(state.generation)) else {
        return 0;
    };
    // SAFETY: as above.
    let counters = unsafe { &mut *counters };
    let Some(mappings) = UNWIND_MAPPINGS.get_ptr(state.key.tgid) else {
        if state.len == 0 {
            // A process without tables (not built yet, or none fit): frame pointers.
            bump(counters, Counter::UnwindNoTables);
            let regs = [state.rip, state.rsp, state.rbp];
            let hash = walk_frame_pointers(regs, scratch);
            finish_sample(ctx, state.generation, &mut state.key, hash, scratch);
            return 0;
        }
        // The process's tables went away between two tail calls: keep what was walked.
        return end(ctx, state, scratch);
    };
    // SAFETY: a map value, valid while this program runs.
    let mappings = unsafe { &*mappings };
    // The row cache is the perf-event programs' only: a tracepoint program interrupted by
    // one could read an entry half written.
    let cached = C::SLOT == 0;
    for _ in 0..FRAMES_PER_CALL {
        if let Step::Done = step(state, scratch, mappings, counters, cached) {
            return end(ctx, state, scratch);
        }
    }
    if state.len as usize >= MAX_STACK_DEPTH || state.tail_calls >= MAX_TAIL_CALLS {
        bump(counters, Counter::UnwindDepthLimit);
        return end(ctx, state, scratch);
    }
    state.tail_calls += 1;
    // Returns only if the tail call failed.
    ctx.tail_call_unwinder();
    end(ctx, state, scratch)
}

/// Starts the table walk of a sample whose process has tables; returns only if the tail call
/// failed (the caller then walks frame pointers as before).
#[inline(always)]
pub(crate) fn start<C: Source>(ctx: &C, state: &mut UnwindState) {
    state.len = 0;
    state.hash = crate::HASH_SEED;
    state.tail_calls = 0;
    state.refresh_asked = 0;
    ctx.tail_call_unwinder();
}

/// Stores the walked stack and counts the sample.
#[inline(always)]
fn end<C: Source>(ctx: &C, state: &mut UnwindState, scratch: &mut Stack) -> u32 {
    let len = state.len;
    scratch.len = len;
    let hash = finish(state.hash, len);
    finish_sample(ctx, state.generation, &mut state.key, hash, scratch);
    0
}

/// Records the frame at the state's registers and moves them to its caller.
#[inline(always)]
fn step(
    state: &mut UnwindState,
    scratch: &mut Stack,
    mappings: &UnwindMappings,
    counters: &mut profiler_common::Counters,
    cached: bool,
) -> Step {
    let len = state.len as usize;
    if len >= MAX_STACK_DEPTH {
        return Step::Done;
    }
    let pc = state.rip;
    scratch.ips[len] = pc;
    state.hash = mix(state.hash, pc);
    state.len = len as u64 + 1;
    // A return address points after its call, which may be the first byte of the next
    // function: look up the call itself. The first frame's pc is exact.
    let lookup = if len == 0 { pc } else { pc - 1 };
    let Some(mapping) = find_mapping(mappings, lookup, &mut state.mapping_hint) else {
        // Code outside every listed mapping: a library mapped after the list was made (a
        // process sampled in ld.so, a dlopen) or JIT code. The daemon reads the map again.
        if state.refresh_asked == 0 {
            state.refresh_asked = 1;
            ask_refresh(state.key.tgid);
        }
        counters_fp(counters);
        return frame_pointer_step(state);
    };
    let Some(row) = find_row(state, mapping, lookup, counters, cached) else {
        return without_row(state, counters);
    };
    let cfa = match row.cfa_rule {
        cfa::RSP => state.rsp + row.cfa_offset as u64,
        cfa::RBP => state.rbp + row.cfa_offset as u64,
        cfa::PLT => {
            let extra = if pc & 15 >= 11 { 8 } else { 0 };
            state.rsp + row.cfa_offset as u64 + extra
        }
        cfa::END => return Step::Done,
        _ => return without_row(state, counters),
    };
    if cfa < MIN_FRAME_ADDRESS + 8 {
        return Step::Done;
    }
    let (ret, caller_rbp) = if row.rbp_rule == rbp::AT_CFA && row.rbp_offset == -16 {
        // The usual frame (`push rbp` right after the call): the saved rbp and the return
        // address side by side, in one read, as a frame-pointer step reads them.
        // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
        let Ok(pair) = (unsafe { bpf_probe_read_user((cfa - 16) as *const [u64; 2]) }) else {
            return Step::Done;
        };
        (pair[1], pair[0])
    } else {
        // SAFETY: as above.
        let Ok(ret) = (unsafe { bpf_probe_read_user((cfa - 8) as *const u64) }) else {
            return Step::Done;
        };
        let caller_rbp = match row.rbp_rule {
            rbp::SAME => state.rbp,
            rbp::AT_CFA => {
                let at = cfa.wrapping_add(row.rbp_offset as i64 as u64);
                // SAFETY: as above.
                unsafe { bpf_probe_read_user(at as *const u64) }.unwrap_or(0)
            }
            _ => 0,
        };
        (ret, caller_rbp)
    };
    bump(counters, Counter::UnwindTableFrames);
    if ret == 0 {
        return Step::Done;
    }
    state.rip = ret;
    state.rsp = cfa;
    state.rbp = caller_rbp;
    Step::Next
}

/// Asks the daemon, through the new-process ring, to read the process's memory map again: at
/// most [`UNWIND_MAX_REFRESHES`] times per process, [`UNWIND_REFRESH_GAP_NS`] apart (JIT code
/// is outside every mapping for good).
#[inline(always)]
fn ask_refresh(tgid: u32) {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    match UNWIND_REFRESH.get_ptr_mut(tgid) {
        Some(asked) => {
            // SAFETY: a map value, updated only by the CPU sampling this thread now (a benign
            // race with another thread of the process costs one request more or less).
            let asked = unsafe { &mut *asked };
            if asked.count >= UNWIND_MAX_REFRESHES || now - asked.last_ns < UNWIND_REFRESH_GAP_NS {
                return;
            }
            asked.count += 1;
            asked.last_ns = now;
        }
        None => {
            let first = UnwindRefresh {
                last_ns: now,
                count: 1,
                _pad: 0,
            };
            if UNWIND_REFRESH.insert(tgid, first, 0).is_err() {
                return;
            }
        }
    }
    let event = NewProcess {
        tgid,
        reason: REASON_MAP_CHANGED,
    };
    // A full ring loses the request; the next one (or the drain-time refresh) makes up.
    let _ = NEW_PROCESS.output::<NewProcess>(&event, 0);
}

#[inline(always)]
fn counters_fp(counters: &mut profiler_common::Counters) {
    bump(counters, Counter::UnwindFpFrames);
}

/// A frame without a usable row. The first frame of a thread-creation sample is the system
/// call wrapper (`clone3`, whose `syscall` glibc leaves outside its CFI): a leaf that has not
/// moved the stack pointer, so the return address is at rsp. Any other frame is walked with
/// frame pointers.
#[inline(always)]
fn without_row(state: &mut UnwindState, counters: &mut profiler_common::Counters) -> Step {
    counters_fp(counters);
    if state.len == 1 && state.key.kind == KIND_THREADS {
        // SAFETY: bpf_probe_read_user checks the address.
        let Ok(ret) = (unsafe { bpf_probe_read_user(state.rsp as *const u64) }) else {
            return Step::Done;
        };
        if ret == 0 {
            return Step::Done;
        }
        state.rip = ret;
        state.rsp += 8;
        return Step::Next;
    }
    frame_pointer_step(state)
}

/// One frame-pointer step: the frame at rbp is [saved rbp, return address].
#[inline(always)]
fn frame_pointer_step(state: &mut UnwindState) -> Step {
    let fp = state.rbp;
    if fp < MIN_FRAME_ADDRESS || fp & 7 != 0 {
        return Step::Done;
    }
    // SAFETY: bpf_probe_read_user checks the address.
    let Ok(frame) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
        return Step::Done;
    };
    if frame[1] == 0 || frame[0] == fp {
        return Step::Done;
    }
    state.rip = frame[1];
    state.rsp = fp + 16;
    state.rbp = frame[0];
    Step::Next
}

/// The mapping holding `addr`: the one at `hint` (the last frame's), else a binary search over
/// the process's sorted mappings, which then sets `hint`.
#[inline(always)]
fn find_mapping<'a>(
    mappings: &'a UnwindMappings,
    addr: u64,
    hint: &mut u32,
) -> Option<&'a UnwindMapping> {
    let count = mappings.count as usize;
    let guess = *hint as usize & (UNWIND_MAX_MAPPINGS - 1);
    if guess < count {
        let mapping = &mappings.mappings[guess];
        if mapping.start <= addr && addr < mapping.end {
            return Some(mapping);
        }
    }
    let (mut lo, mut hi) = (0usize, count.min(UNWIND_MAX_MAPPINGS));
    for _ in 0..=UNWIND_MAPPING_STEPS {
        if lo >= hi {
            return None;
        }
        let mid = (lo + hi) / 2;
        let mapping = &mappings.mappings[mid & (UNWIND_MAX_MAPPINGS - 1)];
        if addr < mapping.start {
            hi = mid;
        } else if addr >= mapping.end {
            lo = mid + 1;
        } else {
            *hint = mid as u32;
            return Some(mapping);
        }
    }
    None
}

/// The row in force at `addr`: from this CPU's row cache, else the last row of its page at
/// or below the address, which is then cached.
#[inline(always)]
fn find_row(
    state: &UnwindState,
    mapping: &UnwindMapping,
    addr: u64,
    counters: &mut profiler_common::Counters,
    cached: bool,
) -> Option<UnwindRow> {
    let offset = addr.wrapping_sub(mapping.bias);
    let page = offset >> UNWIND_PAGE_BITS;
    if page >= u64::from(mapping.page_count) {
        return None;
    }
    let slot = mapping.page_first.wrapping_add(page as u32);
    let low = offset & ((1 << UNWIND_PAGE_BITS) - 1);
    if !cached {
        return search_page(slot, low as u16);
    }
    let key = unwind_cache_key(state.epoch, slot, low);
    let entry = UNWIND_ROW_CACHE.get_ptr_mut(unwind_cache_index(key, state.cache_mask))?;
    // SAFETY: this CPU's entry; a perf-event program is not re-entered on one CPU.
    let entry = unsafe { &mut *entry };
    if entry.key == key {
        bump(counters, Counter::UnwindCacheHits);
        return Some(entry.row);
    }
    let row = search_page(slot, low as u16)?;
    bump(counters, Counter::UnwindCacheMisses);
    entry.key = key;
    entry.row = row;
    Some(row)
}

/// The last row of page slot `slot` at or below `low`.
#[inline(always)]
fn search_page(slot: u32, low: u16) -> Option<UnwindRow> {
    let page = *UNWIND_PAGES.get(slot)?;
    // Invariant: rows[lo].pc_low <= low (the first row of a page is at 0); find the last.
    let (mut lo, mut hi) = (0u32, page.rows);
    for _ in 0..=UNWIND_ROW_STEPS {
        if hi - lo <= 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let row = UNWIND_ROWS.get(page.first.wrapping_add(mid))?;
        if row.pc_low <= low {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if page.rows == 0 {
        return None;
    }
    UNWIND_ROWS.get(page.first.wrapping_add(lo)).copied()
}
