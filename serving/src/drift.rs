//! Drift of what a served model scores, over a sliding window.
//!
//! A [`DriftMonitor`] belongs to one loaded model and counts every row it scores against the
//! training distribution in the model's bundle ([`models::drift`]): a bin of each numeric
//! feature, a slot of each categorical field, unknown levels. Counters are atomics (no lock
//! on the request path; one copy per thread shard, summed by the report) in [`SLOTS`] time slots covering [`DRIFT_WINDOW`]; a slot is cleared
//! when the clock comes back round to it, so the report covers the last hour (between 55
//! and 60 minutes of traffic), and a shift shows within the hour instead of being diluted by
//! everything scored since the model was loaded. The server's `drift_window_secs` setting
//! changes the window (for low traffic).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use features::ProfileValue;
use models::drift::{DriftCounter, DriftReference, DriftReport};

/// The window drift is reported over.
pub const DRIFT_WINDOW: Duration = Duration::from_secs(3600);
/// Time slots the window is kept in; the oldest is cleared as a new one starts.
pub const SLOTS: u64 = 12;

/// Copies of the counters a slot keeps; a thread adds to its own copy (its shard), so
/// two cores scoring at once do not fight over the same cache lines. The report sums them.
pub const SHARDS: usize = 8;

/// Eight counters on one cache line of their own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line([AtomicU64; 8]);

/// Counters of one time slot: [`SHARDS`] blocks of `stride` whole cache lines, each block
/// the reference's cells then the row count.
#[derive(Debug)]
struct Slot {
    /// The slot's epoch (number of slot lengths since the monitor started) plus one; 0
    /// while never used.
    epoch: AtomicU64,
    lines: Vec<Line>,
}

impl Slot {
    /// Counter `i` of the block starting at line `start`.
    fn counter(&self, start: usize, i: usize) -> &AtomicU64 {
        &self.lines[start + i / 8].0[i % 8]
    }
}

/// This thread's shard, handed out in turn the first time a thread records.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Drift counters of one served model.
#[derive(Debug)]
pub struct DriftMonitor {
    counter: DriftCounter,
    started: Instant,
    slot_length: Duration,
    slots: Vec<Slot>,
    /// Cache lines of one shard block: the cells, then the row count.
    stride: usize,
    /// Taken only to clear a slot when a new epoch starts in it.
    clearing: Mutex<()>,
}

impl DriftMonitor {
    /// Counters for `reference` over [`DRIFT_WINDOW`].
    pub fn new(reference: &DriftReference) -> Self {
        Self::with_window(reference, DRIFT_WINDOW)
    }

    /// Counters for `reference` over `window` (cut into [`SLOTS`] slots).
    pub fn with_window(reference: &DriftReference, window: Duration) -> Self {
        let counter = reference.counter();
        let stride = (counter.n_cells() + 1).div_ceil(8);
        let slots = (0..SLOTS)
            .map(|_| Slot {
                epoch: AtomicU64::new(0),
                lines: (0..SHARDS * stride).map(|_| Line::default()).collect(),
            })
            .collect();
        DriftMonitor {
            counter,
            started: Instant::now(),
            slot_length: (window / SLOTS as u32).max(Duration::from_millis(1)),
            slots,
            stride,
            clearing: Mutex::new(()),
        }
    }

    /// The training distribution counted against.
    pub fn reference(&self) -> &DriftReference {
        self.counter.reference()
    }

    /// The window reported over.
    pub fn window(&self) -> Duration {
        self.slot_length * SLOTS as u32
    }

    fn epoch_now(&self) -> u64 {
        (self.started.elapsed().as_nanos() / self.slot_length.as_nanos()) as u64
    }

    /// Counts one scored row: its features and its profile values as the request gave them
    /// (the plan's order).
    pub fn record(&self, row: &[f32], profile: &[ProfileValue]) {
        self.record_at(self.epoch_now(), row, profile);
    }

    fn record_at(&self, epoch: u64, row: &[f32], profile: &[ProfileValue]) {
        let slot = &self.slots[(epoch % SLOTS) as usize];
        let tag = epoch + 1;
        if slot.epoch.load(Ordering::Acquire) != tag {
            // A poisoned lock only means another thread panicked while clearing; clearing
            // again is right.
            let _guard = self
                .clearing
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if slot.epoch.load(Ordering::Acquire) != tag {
                for counter in slot.lines.iter().flat_map(|line| &line.0) {
                    counter.store(0, Ordering::Relaxed);
                }
                slot.epoch.store(tag, Ordering::Release);
            }
        }
        let start = shard() * self.stride;
        self.counter.for_each_cell(row, profile, |i| {
            slot.counter(start, i).fetch_add(1, Ordering::Relaxed);
        });
        slot.counter(start, self.counter.n_cells())
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Drift over the window up to now.
    pub fn report(&self) -> DriftReport {
        self.report_at(self.epoch_now())
    }

    fn report_at(&self, epoch: u64) -> DriftReport {
        let mut rows = 0;
        let mut cells = vec![0u64; self.counter.n_cells()];
        for slot in &self.slots {
            let tag = slot.epoch.load(Ordering::Acquire);
            // Tags epoch - SLOTS + 2 ..= epoch + 1: the slots of the window's epochs.
            if tag == 0 || tag > epoch + 1 || tag + SLOTS <= epoch + 1 {
                continue;
            }
            for shard in 0..SHARDS {
                let start = shard * self.stride;
                for (i, sum) in cells.iter_mut().enumerate() {
                    *sum += slot.counter(start, i).load(Ordering::Relaxed);
                }
                rows += slot.counter(start, cells.len()).load(Ordering::Relaxed);
            }
        }
        self.counter.report(rows, &cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One numeric feature `x`, training values 1..=10 (edges 1..=9).
    fn reference() -> DriftReference {
        serde_json::from_value(serde_json::json!({
            "rows": 10,
            "numeric": [{
                "feature": "x",
                "index": 0,
                "edges": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
                "shares": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
                "missing_share": 0.0
            }],
            "categorical": []
        }))
        .unwrap()
    }

    #[test]
    fn rows_leave_the_window_when_their_slot_is_reused() {
        let monitor = DriftMonitor::with_window(&reference(), Duration::from_secs(3600));
        assert_eq!(monitor.window(), Duration::from_secs(3600));
        for x in 1..=10 {
            monitor.record_at(0, &[x as f32], &[]);
        }
        monitor.record_at(3, &[f32::NAN], &[]);
        let report = monitor.report_at(3);
        assert_eq!(report.rows, 11);
        assert_eq!(report.features[0].missing_share, Some(1.0 / 11.0));
        // Epoch 11 still covers epoch 0; epoch 12 does not.
        assert_eq!(monitor.report_at(11).rows, 11);
        assert_eq!(monitor.report_at(12).rows, 1);
        // Recording in epoch 12 reuses epoch 0's slot: its rows are gone, not added.
        monitor.record_at(12, &[5.0], &[]);
        let report = monitor.report_at(12);
        assert_eq!(report.rows, 2);
        assert_eq!(report.features[0].missing_share, Some(0.5));
        // Past the whole window nothing is left.
        assert_eq!(monitor.report_at(30).rows, 0);
        assert_eq!(monitor.report_at(30).features[0].psi, None);
    }

    #[test]
    fn rows_recorded_from_many_threads_are_all_counted() {
        let monitor = DriftMonitor::new(&reference());
        // More threads than shards: some share one.
        std::thread::scope(|scope| {
            for t in 0..(SHARDS + 3) {
                let monitor = &monitor;
                scope.spawn(move || {
                    for i in 0..100 {
                        let x = if (t + i) % 10 == 0 { f32::NAN } else { 5.5 };
                        monitor.record(&[x], &[]);
                    }
                });
            }
        });
        let report = monitor.report();
        assert_eq!(report.rows, 100 * (SHARDS as u64 + 3));
        assert_eq!(report.features[0].missing_share, Some(0.1));
    }

    #[test]
    fn the_training_distribution_reads_as_no_drift_and_a_shift_as_drift() {
        let monitor = DriftMonitor::new(&reference());
        for x in 1..=10 {
            monitor.record(&[x as f32], &[]);
        }
        let psi = monitor.report().features[0].psi.unwrap();
        assert!(psi.abs() < 1e-12, "{psi}");
        for _ in 0..10 {
            monitor.record(&[100.0], &[]);
        }
        let psi = monitor.report().features[0].psi.unwrap();
        assert!(psi > 0.2, "{psi}");
    }
}
