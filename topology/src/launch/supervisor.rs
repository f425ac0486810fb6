//! Watching a running federation: exits reported, crashed nodes restarted with backoff, given up
//! on after repeated quick crashes (`crate::restart` decides).

use std::time::Duration;

use tokio::time::Instant;

use crate::restart::{fmt_delay, Backoff, Decision, RestartPolicy};

use super::*;

/// What [`Supervisor::tick`] saw and did.
#[derive(Debug)]
pub enum SupervisorEvent {
    /// A process exited and is left stopped: the portal, the private broker, or a node when
    /// restarts are off.
    Exited(ProcessExit),
    /// A node exited on its own and will be started again after `delay`.
    Restarting {
        exit: ProcessExit,
        delay: Duration,
        attempt: u32,
    },
    /// A node was started again (not yet necessarily healthy).
    Restarted { id: String, attempt: u32 },
    /// A node could not even be spawned again; `then` is the next try, if any.
    RestartFailed {
        id: String,
        error: String,
        then: Option<(Duration, u32)>,
    },
    /// A node crashed quickly too many times in a row and is left stopped.
    GaveUp {
        exit: ProcessExit,
        quick_crashes: u32,
        quick_crash: Duration,
    },
}

impl std::fmt::Display for SupervisorEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorEvent::Exited(exit) => write!(f, "!!! {exit}"),
            SupervisorEvent::Restarting {
                exit,
                delay,
                attempt,
            } => write!(
                f,
                "{} exited with {}; restarting in {} (attempt {attempt}); log: {}",
                exit.what,
                exit.status,
                fmt_delay(*delay),
                exit.log.display()
            ),
            SupervisorEvent::Restarted { id, attempt } => {
                write!(f, "node `{id}` started again (attempt {attempt})")
            }
            SupervisorEvent::RestartFailed { id, error, then } => {
                write!(f, "!!! cannot start node `{id}` again: {error}")?;
                match then {
                    Some((delay, attempt)) => write!(
                        f,
                        "; trying again in {} (attempt {attempt})",
                        fmt_delay(*delay)
                    ),
                    None => write!(f, "; giving up on it"),
                }
            }
            SupervisorEvent::GaveUp {
                exit,
                quick_crashes,
                quick_crash,
            } => write!(
                f,
                "!!! giving up on {}: it exited with {} — {quick_crashes} crashes in a row, each \
                 within {} of its start; it stays stopped. Last lines of {}:\n{}",
                exit.what,
                exit.status,
                fmt_delay(*quick_crash),
                exit.log.display(),
                indent(&exit.log_tail)
            ),
        }
    }
}

/// Restart bookkeeping of one node.
#[derive(Debug)]
pub(super) struct NodeRestart {
    pub(super) backoff: Backoff,
    /// When the next start is due, while one is scheduled.
    pub(super) due: Option<(Instant, u32)>,
    pub(super) given_up: bool,
}

/// Restarts the nodes of a [`Federation`] that exit on their own, with the backoff of a
/// [`RestartPolicy`]; reports every other exit. Driven by calling [`tick`](Self::tick) now and
/// then (the `up` loop does it every 500 ms). Exits asked for through
/// [`Federation::stop_node`], [`Federation::kill_node`] or [`Federation::shutdown`] are not
/// seen, so they are never restarted; a node started again by hand while a restart is pending
/// simply cancels it.
///
/// "Stayed healthy for a minute" (which resets the backoff) is measured as a minute of uptime:
/// a node that runs is answering its health check in practice, and one that does not is not
/// crashing either.
#[derive(Debug)]
pub struct Supervisor {
    pub(super) policy: Option<RestartPolicy>,
    pub(super) nodes: std::collections::HashMap<String, NodeRestart>,
}

impl Supervisor {
    /// `None`: report exits, never restart.
    pub fn new(policy: Option<RestartPolicy>) -> Self {
        Supervisor {
            policy,
            nodes: std::collections::HashMap::new(),
        }
    }

    /// Reaps processes that exited, schedules or refuses their restarts, and starts the nodes
    /// whose delay is over. Never waits.
    pub fn tick(&mut self, fed: &mut Federation) -> Vec<SupervisorEvent> {
        let now = Instant::now();
        let mut events = Vec::new();
        for exit in fed.poll_exits() {
            let (Some(policy), Some(id)) = (self.policy, exit.node.clone()) else {
                events.push(SupervisorEvent::Exited(exit));
                continue;
            };
            let ran_for = fed
                .node(&id)
                .and_then(|n| n.started)
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
            let state = self.state(policy, &id);
            match state.backoff.on_exit(ran_for) {
                Decision::Restart { delay, attempt } => {
                    state.due = Some((now + delay, attempt));
                    events.push(SupervisorEvent::Restarting {
                        exit,
                        delay,
                        attempt,
                    });
                }
                Decision::GiveUp { quick_crashes } => {
                    state.given_up = true;
                    events.push(SupervisorEvent::GaveUp {
                        exit,
                        quick_crashes,
                        quick_crash: policy.quick_crash,
                    });
                }
            }
        }

        let Some(policy) = self.policy else {
            return events;
        };
        let due: Vec<(String, u32)> = self
            .nodes
            .iter()
            .filter_map(|(id, s)| match s.due {
                Some((at, attempt)) if at <= now => Some((id.clone(), attempt)),
                _ => None,
            })
            .collect();
        for (id, attempt) in due {
            let state = self.state(policy, &id);
            state.due = None;
            let Ok(i) = fed.index_of(&id) else { continue };
            if fed.nodes[i].child.is_some() {
                // Started again by someone else meanwhile.
                continue;
            }
            match fed.spawn_node(i) {
                Ok(()) => events.push(SupervisorEvent::Restarted { id, attempt }),
                Err(e) => {
                    let then = match state.backoff.on_exit(Duration::ZERO) {
                        Decision::Restart { delay, attempt } => {
                            state.due = Some((now + delay, attempt));
                            Some((delay, attempt))
                        }
                        Decision::GiveUp { .. } => {
                            state.given_up = true;
                            None
                        }
                    };
                    events.push(SupervisorEvent::RestartFailed {
                        id,
                        error: format!("{e:#}"),
                        then,
                    });
                }
            }
        }
        events
    }

    /// Whether a restart of some node is scheduled.
    pub fn restart_pending(&self) -> bool {
        self.nodes.values().any(|s| s.due.is_some())
    }

    /// Whether the supervisor gave up on node `id`.
    pub fn gave_up_on(&self, id: &str) -> bool {
        self.nodes.get(id).is_some_and(|s| s.given_up)
    }

    pub(super) fn state(&mut self, policy: RestartPolicy, id: &str) -> &mut NodeRestart {
        self.nodes
            .entry(id.to_owned())
            .or_insert_with(|| NodeRestart {
                backoff: Backoff::new(policy),
                due: None,
                given_up: false,
            })
    }
}
