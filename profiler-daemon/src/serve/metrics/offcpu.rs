//! The off-CPU source's family: what became of each switch-out of a selected thread.

use profiler_common::Counter as Kernel;
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{advance, Outcome, Snapshot};

#[derive(Default)]
pub(super) struct OffCpuFamilies {
    blocks: Family<Outcome, Counter>,
}

impl OffCpuFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "profilerd_offcpu_blocks",
            "Switch-outs of selected threads (--profile offcpu) by outcome: blocked (stacks taken, block begun), blocked_full (--offcpu-max-blocked threads already switched out: not counted), counted (ended and added to the off-CPU profile), short (ended under --offcpu-min-block), counts_full (ended with the counts map full: lost)",
            self.blocks.clone(),
        );
    }

    pub(super) fn apply(&self, s: &Snapshot) {
        for (outcome, counter) in [
            ("blocked", Kernel::OffCpuBlocked),
            ("blocked_full", Kernel::OffCpuBlockedFull),
            ("counted", Kernel::OffCpuCounted),
            ("short", Kernel::OffCpuShort),
            ("counts_full", Kernel::OffCpuCountsFull),
        ] {
            advance(
                &self.blocks.get_or_create(&Outcome { outcome }),
                s.accounting.kernel.get(counter),
            );
        }
    }
}
