//! The bearer token that write endpoints require: given (flag, environment, file), read from a
//! token file, or generated once and kept in `DATA_DIR/token` so a node is never writable
//! without one.

use std::path::{Path, PathBuf};

/// A token file that cannot be read, or a generated token that cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot read token file {path}: {source}")]
pub struct TokenFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The token given, else the first line of `file`, else the one kept in `data_dir` (generated
/// on the first start).
pub fn resolve(
    given: Option<String>,
    file: Option<&Path>,
    data_dir: &Path,
) -> Result<String, TokenFileError> {
    match (given, file) {
        (Some(t), _) => Ok(t),
        (None, Some(path)) => read_token_file(path),
        (None, None) => load_or_generate_token(data_dir),
    }
}

/// 16 to 256 printable ASCII characters without spaces.
pub fn is_valid(token: &str) -> bool {
    (16..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

fn load_or_generate_token(data_dir: &Path) -> Result<String, TokenFileError> {
    let path = data_dir.join("token");
    if path.exists() {
        return read_token_file(&path);
    }
    use rand::distr::{Alphanumeric, SampleString};
    let token = Alphanumeric.sample_string(&mut rand::rng(), 40);
    write_private(&path, &token).map_err(|source| TokenFileError {
        path: path.clone(),
        source,
    })?;
    tracing::warn!(path = %path.display(), "no token configured; generated one");
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{text}")?;
    f.sync_all()
}
