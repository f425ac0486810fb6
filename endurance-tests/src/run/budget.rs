//! The run's byte budget: a hard bound on the content bytes the workload and the faults may
//! send to the primaries, so that what a run asks of the machine's disks does not depend on
//! the seed it draws.
//!
//! Without retention, a node keeps every object it ever pulled. The bytes any one node can hold
//! are therefore bounded by the bytes ever published, and the budget bounds those. Every
//! attempt (a retry at the other primary too, since the first may have stored the bytes before
//! its answer was lost) takes its size from a pool before it sends a byte. The disk-fault
//! node's tmpfs is sized from the sum of the pools ([`disk_needed`]), so no seed can fill it with
//! real content.
//!
//! Three pools, so that one kind of traffic cannot starve another: the medium lanes (sizes
//! around the 8 KiB / 64 KiB / 1 MiB boundaries keep being exercised to the end of the run), the
//! large lane, and the faults that publish (mid-transfer kills need a large document, corruption
//! a medium one), sized for the number of faults of the profile so that every such fault gets its
//! document. A soak spreads each pool over its duration (pacing) instead of spending it in the
//! first minutes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// One pool of bytes.
#[derive(Debug)]
pub struct Pool {
    limit: u64,
    /// Spread over this long: at `t`, at most `limit × min(1, 1/10 + t / over)` is taken.
    over: Option<Duration>,
    started: Instant,
    taken: AtomicU64,
}

impl Pool {
    pub fn new(limit: u64, over: Option<Duration>, started: Instant) -> Pool {
        Pool {
            limit,
            over,
            started,
            taken: AtomicU64::new(0),
        }
    }

    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// What may have been taken by now.
    fn allowed(&self) -> u64 {
        match self.over {
            None => self.limit,
            Some(over) if over.is_zero() => self.limit,
            Some(over) => {
                let share =
                    (0.1 + self.started.elapsed().as_secs_f64() / over.as_secs_f64()).min(1.0);
                (self.limit as f64 * share) as u64
            }
        }
    }

    /// Takes up to `want` bytes: fewer, down to zero, when the pool runs short.
    pub fn take_up_to(&self, want: u64) -> u64 {
        let allowed = self.allowed();
        let mut granted = 0;
        let _ = self
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                granted = want.min(allowed.saturating_sub(taken));
                Some(taken + granted)
            });
        granted
    }

    /// Takes all of `want` bytes, or nothing.
    pub fn take(&self, want: u64) -> bool {
        let allowed = self.allowed();
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken.checked_add(want)? <= allowed).then_some(taken + want)
            })
            .is_ok()
    }
}

/// The limits of a run's pools, before the run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub medium: u64,
    pub large: u64,
    pub faults: u64,
}

impl Limits {
    pub fn total(&self) -> u64 {
        self.medium + self.large + self.faults
    }

    /// The same split, scaled to `total` bytes.
    pub fn scaled_to(&self, total: u64) -> Limits {
        let whole = self.total().max(1) as f64;
        let part = |p: u64| (total as f64 * p as f64 / whole) as u64;
        let medium = part(self.medium);
        let large = part(self.large);
        Limits {
            medium,
            large,
            faults: total.saturating_sub(medium + large),
        }
    }
}

/// The pools of a running workload.
#[derive(Debug)]
pub struct Budget {
    pub medium: Pool,
    pub large: Pool,
    pub faults: Pool,
}

impl Budget {
    pub fn new(limits: Limits, over: Option<Duration>, started: Instant) -> Budget {
        Budget {
            medium: Pool::new(limits.medium, over, started),
            large: Pool::new(limits.large, over, started),
            // Faults are few and each needs its whole document: not paced.
            faults: Pool::new(limits.faults, None, started),
        }
    }

    pub fn taken(&self) -> u64 {
        self.medium.taken() + self.large.taken() + self.faults.taken()
    }
}

/// What a run whose publications are bounded by `budget` bytes can place on one node's disk:
/// every object it could pull (at most everything published), plus the temporary copies of
/// concurrent on-demand transfers (one per workload lane, each at most the largest document),
/// plus its database, write-ahead log and log file (`overhead`). Small objects (content of at
/// most `inline_max`, kept in the database rather than as files) are content like any other:
/// the budget covers them.
pub fn disk_needed(budget: u64, lanes: u64, largest: u64, overhead: u64) -> u64 {
    budget + lanes * largest + overhead
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pool_never_grants_more_than_its_limit() {
        let pool = Pool::new(100, None, Instant::now());
        assert!(pool.take(60));
        assert!(!pool.take(50), "all or nothing");
        assert_eq!(pool.take_up_to(50), 40, "the rest, not more");
        assert_eq!(pool.take_up_to(1), 0);
        assert!(pool.take(0));
        assert_eq!(pool.taken(), 100);
    }

    #[tokio::test]
    async fn concurrent_takers_share_the_limit() {
        let pool = std::sync::Arc::new(Pool::new(10_000, None, Instant::now()));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let p = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = 0;
                for _ in 0..1000 {
                    got += p.take_up_to(7);
                    if p.take(5) {
                        got += 5;
                    }
                }
                got
            }));
        }
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap();
        }
        assert_eq!(sum, 10_000);
        assert_eq!(pool.taken(), 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_pool_spreads_its_limit_over_the_duration() {
        let pool = Pool::new(1000, Some(Duration::from_secs(100)), Instant::now());
        assert_eq!(pool.take_up_to(1000), 100, "a tenth at the start");
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(pool.take_up_to(1000), 400);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(pool.take_up_to(1000), 500, "never more than the limit");
    }

    #[test]
    fn scaling_keeps_the_split_and_the_total() {
        let l = Limits {
            medium: 640,
            large: 1024,
            faults: 528,
        };
        let s = l.scaled_to(4384);
        assert_eq!(s.total(), 4384);
        assert_eq!((s.medium, s.large), (1280, 2048));
    }
}
