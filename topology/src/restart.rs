//! When to restart a node that exited on its own, as a service manager would: exponential
//! backoff (1 s, 2 s, 4 s … capped at 30 s), forgotten once the node has stayed up long enough,
//! and giving up after a run of quick crashes, since a node that dies within seconds of every
//! start (bad config, port taken, corrupt database) will not be cured by starting it again.
//!
//! Pure bookkeeping with no clock of its own: the caller says how long the process ran, so the
//! schedule is unit-tested without waiting. The loop that uses it is
//! [`crate::launch::Supervisor`].

use std::time::Duration;

/// The restart rules. [`RestartPolicy::default`] is what `docfed-topology up` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubled for each further one.
    pub initial_delay: Duration,
    /// The delay never grows beyond this.
    pub max_delay: Duration,
    /// A process that ran at least this long starts over with `initial_delay` and a clean
    /// record of quick crashes.
    pub reset_after: Duration,
    /// An exit within this time of the start counts as a quick crash.
    pub quick_crash: Duration,
    /// Give up at this many quick crashes in a row.
    pub give_up_after: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            quick_crash: Duration::from_secs(10),
            give_up_after: 5,
        }
    }
}

/// What to do about one exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the process again after `delay`; `attempt` counts restarts since the last reset
    /// (1 for the first).
    Restart { delay: Duration, attempt: u32 },
    /// Leave it stopped: it crashed quickly `quick_crashes` times in a row.
    GiveUp { quick_crashes: u32 },
}

/// The restart record of one process under a [`RestartPolicy`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RestartPolicy,
    /// Restarts since the last reset.
    attempts: u32,
    /// Quick crashes in a row.
    quick_crashes: u32,
}

impl Backoff {
    pub fn new(policy: RestartPolicy) -> Self {
        Backoff {
            policy,
            attempts: 0,
            quick_crashes: 0,
        }
    }

    /// Records an exit of a process that had been running for `ran_for`, and decides.
    pub fn on_exit(&mut self, ran_for: Duration) -> Decision {
        let p = &self.policy;
        if ran_for >= p.reset_after {
            self.attempts = 0;
            self.quick_crashes = 0;
        }
        if ran_for < p.quick_crash {
            self.quick_crashes += 1;
        } else {
            self.quick_crashes = 0;
        }
        if self.quick_crashes >= p.give_up_after {
            return Decision::GiveUp {
                quick_crashes: self.quick_crashes,
            };
        }
        // 2^attempts, saturating: the cap is reached long before the shift would overflow.
        let factor = 1u32.checked_shl(self.attempts).unwrap_or(u32::MAX);
        let delay = p.initial_delay.saturating_mul(factor).min(p.max_delay);
        self.attempts += 1;
        Decision::Restart {
            delay,
            attempt: self.attempts,
        }
    }
}

/// `1 s`, `2.5 s`, `20 ms`: for messages about delays.
pub fn fmt_delay(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_secs(1);
    const SLOW: Duration = Duration::from_secs(30);
    const HEALTHY: Duration = Duration::from_secs(60);

    fn delays(b: &mut Backoff, ran_for: Duration, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| match b.on_exit(ran_for) {
                Decision::Restart { delay, .. } => delay.as_secs(),
                d => panic!("unexpected {d:?}"),
            })
            .collect()
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        // Exits after 30 s are neither quick nor long enough to reset: pure backoff.
        let mut b = Backoff::new(RestartPolicy::default());
        assert_eq!(delays(&mut b, SLOW, 8), [1, 2, 4, 8, 16, 30, 30, 30]);
        // Far past any shift width, still capped.
        assert_eq!(delays(&mut b, SLOW, 40).last(), Some(&30));
    }

    #[test]
    fn attempts_count_from_one() {
        let mut b = Backoff::new(RestartPolicy::default());
        assert_eq!(
            b.on_exit(SLOW),
            Decision::Restart {
                delay: Duration::from_secs(1),
                attempt: 1
            }
        );
        assert_eq!(
            b.on_exit(SLOW),
            Decision::Restart {
                delay: Duration::from_secs(2),
                attempt: 2
            }
        );
    }

    #[test]
    fn a_healthy_minute_resets_the_schedule() {
        let mut b = Backoff::new(RestartPolicy::default());
        assert_eq!(delays(&mut b, SLOW, 4), [1, 2, 4, 8]);
        assert_eq!(
            b.on_exit(HEALTHY),
            Decision::Restart {
                delay: Duration::from_secs(1),
                attempt: 1
            }
        );
        assert_eq!(delays(&mut b, SLOW, 2), [2, 4]);
    }

    #[test]
    fn five_quick_crashes_in_a_row_give_up() {
        let mut b = Backoff::new(RestartPolicy::default());
        assert_eq!(delays(&mut b, QUICK, 4), [1, 2, 4, 8]);
        assert_eq!(b.on_exit(QUICK), Decision::GiveUp { quick_crashes: 5 });
    }

    #[test]
    fn one_slow_exit_breaks_the_run_of_quick_crashes() {
        let mut b = Backoff::new(RestartPolicy::default());
        delays(&mut b, QUICK, 4);
        // Ran 10 s exactly: not quick (the rule is "within 10 s").
        delays(&mut b, Duration::from_secs(10), 1);
        // Four more quick ones are allowed again; the delay keeps growing meanwhile.
        assert_eq!(delays(&mut b, QUICK, 4), [30, 30, 30, 30]);
        assert_eq!(b.on_exit(QUICK), Decision::GiveUp { quick_crashes: 5 });
    }

    #[test]
    fn quick_crashes_after_a_healthy_run_start_a_new_count() {
        let mut b = Backoff::new(RestartPolicy::default());
        delays(&mut b, QUICK, 4);
        // The node came back and stayed up for a minute, then crashed: a fresh start.
        assert_eq!(delays(&mut b, HEALTHY, 1), [1]);
        assert_eq!(delays(&mut b, QUICK, 3), [2, 4, 8]);
        assert_eq!(delays(&mut b, QUICK, 1), [16]);
        assert_eq!(b.on_exit(QUICK), Decision::GiveUp { quick_crashes: 5 });
    }

    #[test]
    fn delays_read_well() {
        assert_eq!(fmt_delay(Duration::from_secs(2)), "2 s");
        assert_eq!(fmt_delay(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(fmt_delay(Duration::from_millis(20)), "20 ms");
    }
}
