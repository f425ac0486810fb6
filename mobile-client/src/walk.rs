//! The files `docfed publish` names: files as given, folders recursively in name order.
//! Nothing is left out silently: what cannot be published (an unreadable file or folder, a
//! symbolic link inside a folder, a device or a socket) is a file with its problem, reported
//! like a refusal.

use std::path::{Path, PathBuf};

/// A file to publish, or a path that cannot be.
#[derive(Debug)]
pub struct Found {
    pub path: PathBuf,
    /// The file's size, or why it cannot be published.
    pub size: Result<u64, String>,
}

/// Every file under `paths`, in order. A path given on the command line that is a symbolic
/// link is followed (it was named); links inside folders are not.
pub fn files(paths: &[PathBuf]) -> Vec<Found> {
    let mut out = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Err(e) => out.push(problem(path, e.to_string())),
            Ok(m) if m.is_dir() => folder(path, &mut out),
            Ok(m) => out.push(file(path, &m)),
        }
    }
    out
}

fn folder(dir: &Path, out: &mut Vec<Found>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd.collect::<Result<Vec<_>, _>>(),
        Err(e) => Err(e),
    };
    let mut entries = match entries {
        Ok(entries) => entries,
        Err(e) => return out.push(problem(dir, format!("cannot read the folder: {e}"))),
    };
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Err(e) => out.push(problem(&path, e.to_string())),
            Ok(m) if m.file_type().is_symlink() => out.push(problem(
                &path,
                "a symbolic link, not followed inside a folder (name its target to publish it)"
                    .into(),
            )),
            Ok(m) if m.is_dir() => folder(&path, out),
            Ok(m) => out.push(file(&path, &m)),
        }
    }
}

/// A file that can be read now; anything else is a problem.
fn file(path: &Path, m: &std::fs::Metadata) -> Found {
    if !m.is_file() {
        return problem(path, "not a regular file".into());
    }
    match std::fs::File::open(path) {
        Ok(_) => Found {
            path: path.to_owned(),
            size: Ok(m.len()),
        },
        Err(e) => problem(path, format!("cannot read: {e}")),
    }
}

fn problem(path: &Path, why: String) -> Found {
    Found {
        path: path.to_owned(),
        size: Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_in_name_order_and_links_in_them_reported() {
        let tmp = std::env::temp_dir().join(format!("docfed-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("b/c")).unwrap();
        std::fs::write(tmp.join("b/c/z.txt"), "z").unwrap();
        std::fs::write(tmp.join("b/a.txt"), "aa").unwrap();
        std::fs::write(tmp.join("a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(tmp.join("a.txt"), tmp.join("b/link")).unwrap();
        let found = files(std::slice::from_ref(&tmp));
        let names: Vec<String> = found
            .iter()
            .map(|f| f.path.strip_prefix(&tmp).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.txt", "b/a.txt", "b/c/z.txt", "b/link"]);
        assert_eq!(found[1].size, Ok(2));
        assert!(found[3]
            .size
            .as_ref()
            .unwrap_err()
            .contains("symbolic link"));
        // Named on the command line, a link is followed.
        let given = files(&[tmp.join("b/link"), tmp.join("missing")]);
        assert_eq!(given[0].size, Ok(1));
        assert!(given[1].size.is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
