//! The sources page's model: each reachback source of the topology (ARCHITECTURE.md §2.9) with
//! which primary runs it now and what each primary recorded of its runs.
//!
//! A source runs on one primary at a time, the one holding its lease, and each primary counts
//! only the runs it made itself: after a takeover the history is split between the two. So the
//! page asks both primaries (`GET /v1/sources`) and shows every primary's record side by side
//! rather than one merged row that would hide where a failure happened. A primary that does not
//! answer is a row saying so, never an error page: the other one's view is still worth showing.

use docfed_shared::wire::sources::SourceView;

use crate::primaries::{Primaries, Sources};

/// One source as the page shows it.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub name: String,
    pub kind: String,
    pub scope: String,
    /// The primaries that run it now (portal names), with since when (Unix ms). More than one
    /// only for a moment, while a lease changes hands.
    pub running: Vec<(String, Option<i64>)>,
    /// Every primary's record of it, in configuration order.
    pub records: Vec<Record>,
}

/// What one primary said about one source.
#[derive(Debug, Clone)]
pub struct Record {
    /// The primary's name in the portal (its topology id, or its URL without a topology).
    pub primary: String,
    pub state: RecordState,
}

#[derive(Debug, Clone)]
pub enum RecordState {
    Reported(Box<SourceView>),
    /// The primary did not answer; why.
    Unreachable(String),
    /// The primary answered without this source (its topology differs).
    NotListed,
}

/// The page's model: the sources, and the primaries that did not answer with why.
#[derive(Debug, Clone)]
pub struct SourcesView {
    pub sources: Vec<SourceRow>,
    pub unreachable: Vec<(String, String)>,
    /// Whether any primary answered (else nothing is known, not even whether there are
    /// sources).
    pub any_answer: bool,
    /// Unix ms when the primaries were asked.
    pub at_ms: i64,
}

/// Sources in the order the first answering primary lists them (its topology's), then any
/// only another primary lists.
pub fn view(primaries: &Primaries, asked: &Sources) -> SourcesView {
    let names: Vec<String> = primaries.all().iter().map(|p| p.name.clone()).collect();
    let mut sources: Vec<SourceRow> = Vec::new();
    for a in asked.answers.iter().filter_map(|a| a.as_ref().ok()) {
        for s in &a.sources {
            if !sources.iter().any(|r| r.name == s.name) {
                sources.push(SourceRow {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    scope: s.scope.clone(),
                    running: Vec::new(),
                    records: Vec::new(),
                });
            }
        }
    }
    for row in &mut sources {
        for (primary, answer) in names.iter().zip(&asked.answers) {
            let state = match answer {
                Err(e) => RecordState::Unreachable(e.clone()),
                Ok(a) => match a.sources.iter().find(|s| s.name == row.name) {
                    Some(s) => {
                        if s.active {
                            row.running.push((primary.clone(), s.active_since));
                        }
                        RecordState::Reported(Box::new(s.clone()))
                    }
                    None => RecordState::NotListed,
                },
            };
            row.records.push(Record {
                primary: primary.clone(),
                state,
            });
        }
    }
    let unreachable = names
        .iter()
        .zip(&asked.answers)
        .filter_map(|(n, a)| a.as_ref().err().map(|e| (n.clone(), e.clone())))
        .collect();
    SourcesView {
        sources,
        unreachable,
        any_answer: asked.answers.iter().any(Result::is_ok),
        at_ms: asked.at_ms,
    }
}

impl SourcesView {
    /// "2 sources: 1 running, 1 not running; 1 with failed items. pb is unreachable."
    pub fn summary(&self) -> String {
        let mut out = if !self.any_answer {
            "No primary answered: the sources are unknown.".to_owned()
        } else if self.sources.is_empty() {
            "No sources are configured.".to_owned()
        } else {
            let n = self.sources.len();
            let running = self
                .sources
                .iter()
                .filter(|s| !s.running.is_empty())
                .count();
            let mut parts = vec![format!("{running} running")];
            if running < n {
                parts.push(format!("{} not running", n - running));
            }
            let failing = self.sources.iter().filter(|s| s.has_failures()).count();
            let mut text = format!(
                "{n} source{}: {}",
                if n == 1 { "" } else { "s" },
                parts.join(", ")
            );
            if failing > 0 {
                text += &format!("; {failing} with failed items");
            }
            text + "."
        };
        if !self.unreachable.is_empty() {
            let names: Vec<&str> = self.unreachable.iter().map(|(n, _)| n.as_str()).collect();
            out += &format!(
                " {} {} unreachable.",
                names.join(" and "),
                if names.len() == 1 { "is" } else { "are" }
            );
        }
        out
    }
}

impl SourceRow {
    /// Whether a primary counted failed items of it.
    pub fn has_failures(&self) -> bool {
        self.records
            .iter()
            .any(|r| matches!(&r.state, RecordState::Reported(s) if s.status.failed > 0))
    }

    /// Whether a primary that would know did not answer.
    pub fn partly_unknown(&self) -> bool {
        self.records
            .iter()
            .any(|r| matches!(r.state, RecordState::Unreachable(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docfed_shared::wire::sources::{SourceStatus, SourcesView as SourcesAnswer};

    fn primaries() -> Primaries {
        Primaries::two_unreachable().1
    }

    fn state(name: &str, active: bool, published: i64, failed: i64) -> SourceView {
        SourceView {
            name: name.into(),
            kind: "watch".into(),
            scope: "global".into(),
            active,
            active_since: active.then_some(1_000),
            status: SourceStatus {
                runs: 1,
                published,
                failed,
                ..SourceStatus::default()
            },
            ..SourceView::default()
        }
    }

    #[test]
    fn every_primary_has_its_record_and_the_one_holding_the_lease_runs_it() {
        let p = primaries();
        let asked = Sources {
            answers: vec![
                Ok(SourcesAnswer {
                    node: "pa".into(),
                    sources: vec![state("inbox", true, 3, 0), state("feed", false, 0, 0)],
                }),
                Ok(SourcesAnswer {
                    node: "pb".into(),
                    sources: vec![state("inbox", false, 1, 2), state("feed", false, 0, 0)],
                }),
            ],
            at_ms: 5_000,
        };
        let v = view(&p, &asked);
        let names: Vec<&str> = v.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["inbox", "feed"], "the topology's order");
        let inbox = &v.sources[0];
        assert_eq!(inbox.running, [("127.0.0.1:9".to_owned(), Some(1_000))]);
        assert_eq!(inbox.records.len(), 2);
        assert!(
            matches!(&inbox.records[1].state, RecordState::Reported(s) if s.status.published == 1)
        );
        assert!(inbox.has_failures());
        assert!(v.sources[1].running.is_empty());
        assert_eq!(
            v.summary(),
            "2 sources: 1 running, 1 not running; 1 with failed items."
        );
    }

    #[test]
    fn a_primary_that_does_not_answer_is_a_row_saying_so() {
        let p = primaries();
        let asked = Sources {
            answers: vec![
                Err("connection refused".into()),
                Ok(SourcesAnswer {
                    node: "pb".into(),
                    sources: vec![state("inbox", true, 0, 0)],
                }),
            ],
            at_ms: 5_000,
        };
        let v = view(&p, &asked);
        assert!(v.any_answer);
        assert!(v.sources[0].partly_unknown());
        assert!(matches!(
            &v.sources[0].records[0].state,
            RecordState::Unreachable(e) if e == "connection refused"
        ));
        assert_eq!(
            v.summary(),
            "1 source: 1 running. 127.0.0.1:9 is unreachable."
        );

        let none = Sources {
            answers: vec![Err("refused".into()), Err("timed out".into())],
            at_ms: 5_000,
        };
        let v = view(&p, &none);
        assert!(!v.any_answer && v.sources.is_empty());
        assert_eq!(
            v.summary(),
            "No primary answered: the sources are unknown. 127.0.0.1:9 and 127.0.0.1:10 are \
             unreachable."
        );

        let empty = Sources {
            answers: vec![
                Ok(SourcesAnswer {
                    node: "pa".into(),
                    sources: vec![],
                }),
                Ok(SourcesAnswer {
                    node: "pb".into(),
                    sources: vec![],
                }),
            ],
            at_ms: 5_000,
        };
        assert_eq!(view(&p, &empty).summary(), "No sources are configured.");
    }
}
