//! Files written whole or not at all: a temporary file in the same folder, then a rename, so
//! a reader, a crash or a Ctrl-C never sees half a file and a user's previous file is only
//! ever replaced by a complete one.

use super::ExportError;
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically, creating its folder if needed. A symlink is
/// followed (its target is replaced, the link kept); a path that is not a regular file (a
/// device such as /dev/null or /dev/stdout, a FIFO) is written into, since renaming over it
/// would destroy it. A new file gets the usual permissions (0666 less the umask); a replaced
/// one keeps its own.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let path = &resolve_links(path);
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() && !meta.is_dir() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(ExportError::at(path))?;
            return f.write_all(bytes).map_err(ExportError::at(path));
        }
    }
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(ExportError::at(path))?;
    let permissions = match std::fs::metadata(path) {
        Ok(old) => Some(old.permissions()),
        Err(_) => new_file_permissions(),
    };
    // Same folder: the rename stays on one filesystem and is atomic there.
    let mut builder = tempfile::Builder::new();
    builder.prefix(".kvbench-").suffix(".partial");
    if let Some(p) = permissions {
        builder.permissions(p);
    }
    let mut tmp = builder.tempfile_in(dir).map_err(ExportError::at(path))?;
    tmp.write_all(bytes).map_err(ExportError::at(path))?;
    tmp.as_file().sync_data().map_err(ExportError::at(path))?;
    tmp.persist(path)
        .map_err(|e| ExportError::at(path)(e.error))?;
    Ok(())
}

/// The file a chain of symlinks ends at (a dangling link: the path it names), so that the
/// rename replaces that file and leaves the links in place.
fn resolve_links(path: &Path) -> std::path::PathBuf {
    let mut at = path.to_path_buf();
    // A bounded walk: a loop of links is left to the open to refuse.
    for _ in 0..32 {
        match std::fs::read_link(&at) {
            Ok(target) => {
                at = match at.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                }
            }
            Err(_) => break,
        }
    }
    at
}

/// Permissions a newly created output file asks for: read-write for all, less the umask
/// (the operating system applies it when the file is created), as any other tool's output.
fn new_file_permissions() -> Option<std::fs::Permissions> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(std::fs::Permissions::from_mode(0o666))
    }
    #[cfg(not(unix))]
    {
        None
    }
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
    if let Some(file) = file_above(path) {
        return Err(refuse(&format!("{} is not a folder", file.display())));
    }
    Ok(())
}

/// The nearest part of `path` above it that exists, when that is not a folder: creating
/// `path`'s folders would fail there with only "File exists".
pub fn file_above(path: &Path) -> Option<&Path> {
    path.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| a.exists())
        .filter(|a| !a.is_dir())
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

    #[cfg(unix)]
    #[test]
    fn links_are_followed_devices_written_into_and_modes_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A link: its target is replaced, the link stays a link.
        let target = dir.path().join("target.csv");
        let link = dir.path().join("link.csv");
        std::fs::write(&target, "old\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("target.csv", &link).unwrap();
        write(&link, b"new\n").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        // The replaced file keeps its mode; a new one is not private to its owner.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&target), 0o640);
        // A new file: the mode any other new file gets here (0666 less the umask).
        let fresh = dir.path().join("fresh.csv");
        write(&fresh, b"x\n").unwrap();
        let plain = dir.path().join("plain.csv");
        std::fs::write(&plain, "x\n").unwrap();
        assert_eq!(mode(&fresh), mode(&plain));
        // A device is written into, not replaced by a regular file.
        write(Path::new("/dev/null"), b"gone\n").unwrap();
        let null = std::fs::metadata("/dev/null").unwrap();
        assert!(!null.is_file(), "/dev/null is still a device");
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
