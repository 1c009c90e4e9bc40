//! Files and folders that hold what only this node's user may read: the database (memories,
//! pii, token digests), its WAL, the audit log and the data directory. They are created
//! owner-only (0600 files, 0700 folders), and ones found open to others are tightened.

use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) if missing, the last one 0700; an existing `dir` that
/// group or others may use is tightened to 0700. Returns whether it was tightened.
pub fn ensure_private_dir(dir: &Path) -> io::Result<bool> {
    if !dir.exists() {
        if let Some(parent) = dir.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(dir) {
            Ok(()) => return Ok(false),
            // Another process made it meanwhile: check it as an existing one.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    tighten(dir, 0o700)
}

/// Creates `file` empty with mode 0600 if missing; an existing one that group or others
/// may read is tightened to 0600. Returns whether it was tightened.
pub fn ensure_private_file(file: &Path) -> io::Result<bool> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(file) {
        Ok(_) => Ok(false),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => tighten(file, 0o600),
        Err(error) => Err(error),
    }
}

/// Tightens `path` to `mode` if it exists and group or others have any access; returns
/// whether it did. A path that does not exist is left alone.
pub fn tighten_if_present(path: &Path, mode: u32) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(_) => tighten(path, mode),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode();
    if current & 0o077 == 0 {
        return Ok(false);
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) => Ok(true),
        // Owned by another user, or on a read-only mount: say so, and go on as before.
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            tracing::warn!(
                path = %path.display(),
                %error,
                "cannot make this owner-only; other users may read it"
            );
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _mode: u32) -> io::Result<bool> {
    Ok(false)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_ones_are_owner_only_and_open_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        assert!(!ensure_private_dir(&dir).unwrap());
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("db");
        assert!(!ensure_private_file(&file).unwrap());
        assert_eq!(mode(&file), 0o600);

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ensure_private_dir(&dir).unwrap());
        assert!(ensure_private_file(&file).unwrap());
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
        assert!(!ensure_private_file(&file).unwrap(), "already private");
        assert!(!tighten_if_present(&dir.join("missing"), 0o600).unwrap());
    }
}
