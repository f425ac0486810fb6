//! Cycles in the parent graph, each named by its nodes.

use std::collections::{HashMap, HashSet};

use super::{Topology, TopologyError};

impl Topology {
    /// Depth-first search over parent edges; each back edge found is one cycle. Iterative so that
    /// a pathological file cannot overflow the stack.
    pub(super) fn find_cycles(&self) -> Vec<TopologyError> {
        let index: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .rev() // so the first node of a duplicated id wins
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let edges: Vec<Vec<usize>> = self
            .nodes
            .iter()
            .map(|n| {
                let mut e: Vec<usize> = n
                    .parents
                    .iter()
                    .filter_map(|p| index.get(p.as_str()).copied())
                    .collect();
                let mut seen = HashSet::new();
                e.retain(|i| seen.insert(*i));
                e
            })
            .collect();

        #[derive(Clone, Copy, PartialEq)]
        enum State {
            New,
            OnPath,
            Done,
        }
        let mut state = vec![State::New; self.nodes.len()];
        let mut cycles = Vec::new();
        for start in 0..self.nodes.len() {
            if state[start] != State::New {
                continue;
            }
            state[start] = State::OnPath;
            // (node, index of the next parent edge to follow)
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            while let Some(&(v, next)) = path.last() {
                let Some(&p) = edges[v].get(next) else {
                    state[v] = State::Done;
                    path.pop();
                    continue;
                };
                if let Some(top) = path.last_mut() {
                    top.1 += 1;
                }
                match state[p] {
                    State::New => {
                        state[p] = State::OnPath;
                        path.push((p, 0));
                    }
                    State::OnPath => {
                        if let Some(pos) = path.iter().position(|&(u, _)| u == p) {
                            let mut nodes: Vec<String> = path[pos..]
                                .iter()
                                .map(|&(u, _)| self.nodes[u].id.clone())
                                .collect();
                            nodes.push(self.nodes[p].id.clone());
                            cycles.push(TopologyError::Cycle { nodes });
                        }
                    }
                    State::Done => {}
                }
            }
        }
        cycles
    }
}
