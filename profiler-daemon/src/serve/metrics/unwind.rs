//! The unwind tables' families: how user frames were walked, and the tables' use of their
//! kernel maps against each bound.

use profiler_common::Counter as Kernel;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{advance, Lookup, Map, Reason, Snapshot, U64Gauge};

label_sets!(Method { method });

#[derive(Default)]
pub(super) struct UnwindFamilies {
    frames: Family<Method, Counter>,
    without_tables: Counter,
    depth_limit: Counter,
    cache: Family<Lookup, Counter>,
    entries: Family<Map, U64Gauge>,
    capacity: Family<Map, U64Gauge>,
    built: Counter,
    dropped: Family<Reason, Counter>,
}

impl UnwindFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "profilerd_unwind_frames",
            "User frames by how they were walked: table (a row of the file's .eh_frame table) or frame_pointer (in a process with tables: no table for the code, or a rule the unwinder cannot apply)",
            self.frames.clone(),
        );
        r.register(
            "profilerd_unwind_samples_without_tables",
            "Samples of processes whose unwind tables were not loaded (yet, over a bound, or --unwind fp): walked with frame pointers",
            self.without_tables.clone(),
        );
        r.register(
            "profilerd_unwind_stacks_cut",
            "User stacks the table unwinder cut at 127 frames",
            self.depth_limit.clone(),
        );
        r.register(
            "profilerd_unwind_row_cache_lookups",
            "Table frames by whether their row was in the CPU's row cache (hit) or searched in the tables and cached (miss; --unwind-cache)",
            self.cache.clone(),
        );
        r.register(
            "profilerd_unwind_table_entries",
            "Unwind table entries in kernel memory: rows (8 bytes each), pages, processes (mapping lists), files (tables)",
            self.entries.clone(),
        );
        r.register(
            "profilerd_unwind_table_capacity",
            "Unwind table bounds: rows (--unwind-rows), pages (--unwind-pages), processes (--unwind-processes)",
            self.capacity.clone(),
        );
        r.register(
            "profilerd_unwind_tables_built",
            "Unwind tables built from files' CFI since start",
            self.built.clone(),
        );
        r.register(
            "profilerd_unwind_dropped",
            "What got no table, by reason: no_cfi (a file without usable CFI, unreadable or over --max-symbol-file-bytes), full (a table over the rows or pages left), processes (over --unwind-processes), mappings (over 128 per process), queue (the loader's queue full), write_error (the kernel refused a map write); their frames use frame pointers",
            self.dropped.clone(),
        );
    }

    pub(super) fn apply(&self, s: &Snapshot) {
        let kernel = |c| s.accounting.kernel.get(c);
        for (method, counter) in [
            ("table", Kernel::UnwindTableFrames),
            ("frame_pointer", Kernel::UnwindFpFrames),
        ] {
            advance(
                &self.frames.get_or_create(&Method { method }),
                kernel(counter),
            );
        }
        advance(&self.without_tables, kernel(Kernel::UnwindNoTables));
        advance(&self.depth_limit, kernel(Kernel::UnwindDepthLimit));
        for (result, counter) in [
            ("hit", Kernel::UnwindCacheHits),
            ("miss", Kernel::UnwindCacheMisses),
        ] {
            advance(
                &self.cache.get_or_create(&Lookup { result }),
                kernel(counter),
            );
        }
        let Some(u) = s.unwind else { return };
        for (map, entries, capacity) in [
            ("rows", u.rows, Some(u.rows_capacity)),
            ("pages", u.pages, Some(u.pages_capacity)),
            ("processes", u.processes, Some(u.processes_capacity)),
            ("files", u.files, None),
        ] {
            self.entries.get_or_create(&Map { map }).set(entries);
            if let Some(capacity) = capacity {
                self.capacity.get_or_create(&Map { map }).set(capacity);
            }
        }
        advance(&self.built, u.built);
        for (reason, count) in [
            ("no_cfi", u.files_failed),
            ("full", u.files_dropped),
            ("processes", u.processes_dropped),
            ("mappings", u.mappings_dropped),
            ("queue", u.jobs_dropped),
            ("write_error", u.write_errors),
        ] {
            advance(&self.dropped.get_or_create(&Reason { reason }), count);
        }
    }
}
