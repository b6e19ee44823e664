//! Replacing a file an operator owns (the configuration file's webhooks, the thresholds
//! file) so that a reader sees the old content or the new, never a part, and a crash keeps
//! one of them.

use std::path::Path;

/// Writes `text` beside `path` (mode `mode` when created), syncs it, renames it over `path`
/// and syncs the folder. On failure the temporary file is removed and `path` is unchanged.
pub fn write_atomically(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "old").expect("write");
        write_atomically(&path, "new", 0o644).expect("replace");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["t.toml"]);
        // A folder that does not exist: an error, nothing written.
        let missing = dir.path().join("nope").join("t.toml");
        assert!(write_atomically(&missing, "x", 0o644).is_err());
    }
}
