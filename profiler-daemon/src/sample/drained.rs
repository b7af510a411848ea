//! What one drain hands to the aggregation: sample counts, the stacks they name, and the
//! kernel counters' increments.

use std::{collections::HashMap as StdHashMap, time::Duration};

use profiler_common::{Counter, SampleKey, COUNTER_COUNT};

/// Everything one drain took out of the kernel.
#[derive(Debug, Default)]
pub struct Drained {
    /// Sample buckets with their counts.
    pub samples: Vec<(SampleKey, u64)>,
    /// Instruction pointers of every user stack referenced by `samples`, leaf first.
    pub user_stacks: StdHashMap<u64, Vec<u64>>,
    /// Instruction pointers of every kernel stack referenced by `samples`, leaf first.
    pub kernel_stacks: StdHashMap<u64, Vec<u64>>,
    /// Counter increments since the previous drain, summed over CPUs.
    pub counters: CounterDelta,
    /// Entries the drained counts map held (its fill level).
    pub counts_entries: usize,
    /// Entries the drained user-stack map held.
    pub stack_entries: usize,
    /// Entries the drained kernel-stack map held.
    pub kernel_stack_entries: usize,
    /// How long the drain took, grace period included.
    pub duration: Duration,
}

/// What one sample's user or kernel stack resolves to in a [`Drained`] batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackRef<'a> {
    /// There is no such stack (a kernel thread's user stack, a user-mode sample's kernel stack).
    Absent,
    /// The frames, leaf first.
    Ips(&'a [u64]),
    /// The sample named a stack that the drained map did not hold.
    Lost,
    /// The kernel could not take the stack.
    Unavailable,
}

impl Drained {
    /// The user stack of `key`.
    pub fn user_stack(&self, key: &SampleKey) -> StackRef<'_> {
        lookup(&self.user_stacks, key.user_stack, key.user_stack_error)
    }

    /// The kernel stack of `key`.
    pub fn kernel_stack(&self, key: &SampleKey) -> StackRef<'_> {
        lookup(
            &self.kernel_stacks,
            key.kernel_stack,
            key.kernel_stack_error,
        )
    }
}

fn lookup(stacks: &StdHashMap<u64, Vec<u64>>, hash: u64, error: i32) -> StackRef<'_> {
    if hash != 0 {
        return stacks
            .get(&hash)
            .map_or(StackRef::Lost, |ips| StackRef::Ips(ips));
    }
    if error == -libc::EFAULT {
        StackRef::Absent
    } else {
        StackRef::Unavailable
    }
}

/// Counter values indexed by [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterDelta(pub [u64; COUNTER_COUNT]);

impl CounterDelta {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    pub fn add(&mut self, other: &CounterDelta) {
        for (total, value) in self.0.iter_mut().zip(other.0) {
            *total += value;
        }
    }
}
