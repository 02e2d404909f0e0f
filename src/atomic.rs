//! The one durable, atomic way tokend replaces a file (outputs and state alike): a temp file
//! in the same directory, mode set before any byte, data, fsync, rename, fsync of the directory.

use std::fs::{self, File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Who may read a written file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub mode: u32,
    pub gid: Option<u32>,
}

impl Access {
    pub const PRIVATE: Access = Access {
        mode: 0o600,
        gid: None,
    };
}

/// Creates `dir` and its missing parents with exactly `mode` (not reduced by the umask:
/// a 0640 output for a group reader is useless in a 0700 directory). Existing directories
/// are left as they are.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        // "File exists" from mkdir would hide what is wrong with the path.
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("`{}` is not a directory", dir.display()),
            ));
        }
        Err(_) => {}
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        ensure_dir(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fs::set_permissions(dir, Permissions::from_mode(mode)),
        // Another writer created it in between: fine.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Atomically and durably replaces `path` with `data`. A reader sees the old file or the new
/// one, never a mix; after a crash at any point the old file is intact.
pub fn write_file(path: &Path, data: &[u8], access: Access) -> io::Result<()> {
    let dir = parent(path);
    ensure_dir(dir, 0o755)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    prepare(tmp.as_file(), access)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    // tempfile's persist is a rename without any fsync: the file was synced above, the
    // directory entry is synced below.
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Sets owner group and mode on a fresh, still-empty file. fchmod is not subject to the
/// umask, so `mode: 0640` means 0640 even under `umask 077`.
pub fn prepare(file: &File, access: Access) -> io::Result<()> {
    if let Some(gid) = access.gid {
        std::os::unix::fs::fchown(file, None, Some(gid))?;
    }
    file.set_permissions(Permissions::from_mode(access.mode))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// True when `path` already holds exactly `data` with `access`: rewriting it would only
/// wake readers (inotify, reloaders) for nothing. Anything but a regular file (a FIFO
/// someone left there, a link to a device) is not current, and is never read.
pub fn is_current(path: &Path, data: &[u8], access: Access) -> bool {
    let Ok((file, meta)) = crate::fsread::open_regular(path) else {
        return false;
    };
    if meta.len() != data.len() as u64
        || meta.mode() & 0o7777 != access.mode
        || access.gid.is_some_and(|g| g != meta.gid())
    {
        return false;
    }
    let mut current = Vec::with_capacity(data.len());
    // One byte past the expected length shows a file that grew since fstat.
    file.take(data.len() as u64 + 1)
        .read_to_end(&mut current)
        .is_ok()
        && current == data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_exact_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dir/token");
        write_file(
            &p,
            b"abc",
            Access {
                mode: 0o640,
                gid: None,
            },
        )
        .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"abc");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        write_file(&p, b"second", Access::PRIVATE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn is_current_compares_bytes_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        assert!(!is_current(&p, b"x", Access::PRIVATE));
        write_file(&p, b"x", Access::PRIVATE).unwrap();
        assert!(is_current(&p, b"x", Access::PRIVATE));
        assert!(!is_current(&p, b"y", Access::PRIVATE));
        // Special files are never current and never read (a FIFO would block the open).
        assert!(!is_current(Path::new("/dev/zero"), b"", Access::PRIVATE));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(!is_current(&fifo, b"", Access::PRIVATE));
        assert!(!is_current(
            &p,
            b"x",
            Access {
                mode: 0o644,
                gid: None
            }
        ));
    }
}
