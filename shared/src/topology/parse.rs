//! Reading a topology file: the TOML shape only (unknown keys refused), with the line and
//! column of a mistake; [`Topology::validate`] checks the graph.

use std::path::Path;

use super::{InvalidTopology, Topology, TopologyError};

impl Topology {
    /// Parses the TOML text of a topology file. Only the shape is checked here; call
    /// [`Topology::validate`] for the graph.
    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        toml::from_str(text).map_err(|e| parse_error(None, text, &e))
    }

    /// Reads and parses a topology file; errors name the file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| parse_error(Some(path), &text, &e))
    }

    /// [`Topology::load`] followed by [`Topology::validate`], for programs that refuse to start
    /// on any problem.
    pub fn load_validated(path: &Path) -> Result<Self, InvalidTopology> {
        let invalid = |errors| InvalidTopology {
            path: path.to_owned(),
            errors,
        };
        let topology = Self::load(path).map_err(|e| invalid(vec![e]))?;
        topology.validate().map_err(invalid)?;
        Ok(topology)
    }

    /// The topology as TOML, e.g. for a harness that generates topologies (fresh ports, more
    /// regions) and hands them to `docfed-topology up`.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

fn parse_error(path: Option<&Path>, text: &str, e: &toml::de::Error) -> TopologyError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_column(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    TopologyError::Parse {
        path: path.map(Path::to_owned),
        line,
        column,
        message: e.message().trim_end().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
