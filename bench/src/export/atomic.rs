//! Files written whole or not at all: a temporary file in the same folder, then a rename, so
//! a reader, a crash or a Ctrl-C never sees half a file and a user's previous file is only
//! ever replaced by a complete one.

use super::ExportError;
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically, creating its folder if needed.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(ExportError::at(path))?;
    // Same folder: the rename stays on one filesystem and is atomic there.
    let mut tmp = tempfile::Builder::new()
        .prefix(".kvbench-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(ExportError::at(path))?;
    tmp.write_all(bytes).map_err(ExportError::at(path))?;
    tmp.as_file().sync_data().map_err(ExportError::at(path))?;
    tmp.persist(path)
        .map_err(|e| ExportError::at(path)(e.error))?;
    Ok(())
}

/// Checks, before anything is written, that `path` can be a file: not a folder, and under a
/// folder that exists or can be created (no part of it is a file).
pub fn check_target(path: &Path) -> Result<(), ExportError> {
    let refuse = |why: &str| ExportError {
        path: path.to_path_buf(),
        cause: std::io::Error::other(why.to_string()),
    };
    if path.as_os_str().is_empty() {
        return Err(refuse("an empty path: give a file name"));
    }
    if path.is_dir() {
        return Err(refuse("it is a folder; give a file path"));
    }
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor.filter(|d| !d.as_os_str().is_empty()) {
        if dir.exists() {
            if !dir.is_dir() {
                return Err(refuse(&format!("{} is not a folder", dir.display())));
            }
            break;
        }
        ancestor = dir.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.csv");
        write(&path, b"old\n").unwrap();
        write(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.csv"]);
    }

    #[test]
    fn folders_and_files_in_the_way_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_target(dir.path()).is_err());
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let msg = check_target(&file.join("a.csv")).unwrap_err().to_string();
        assert!(msg.contains("is not a folder"), "{msg}");
        assert!(check_target(&dir.path().join("new/deeper/a.csv")).is_ok());
    }
}
