//! Bounded reads of files tokend does not own: the config, secret files, CA bundles
//! (`net::CaBundle`) and outputs read back. Every such read goes through here, so none of them can block forever
//! or fill memory.
//!
//! - Only regular files are read. A FIFO would block `open` until a writer appears (never,
//!   on SIGHUP), and `/dev/zero` or `/dev/urandom` never end; both are named as the error.
//!   The file is opened with `O_NONBLOCK` so that opening a FIFO returns at once, then
//!   checked with `fstat` on the open descriptor (no race with a rename in between).
//! - At most `limit` bytes are read; a longer file is an error, not a truncation.
//! - A hung file system (NFS, FUSE) can still block a read in the kernel, where no flag
//!   helps: [`with_deadline`] runs such work on a thread of its own and gives up waiting.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

/// The config file: thousands of credentials fit in a few MiB.
pub const CONFIG_LIMIT: u64 = 16 << 20;
/// A secret file: passwords, client secrets and refresh tokens are short.
pub const SECRET_LIMIT: u64 = 64 << 10;
/// Loading the config with every secret it names; far above what a healthy disk needs.
pub const LOAD_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}", crate::util::io_reason(.0))]
    Io(#[from] io::Error),
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is larger than {}", size(*.0))]
    TooLarge(u64),
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// What a non-regular file is, for the error message.
pub fn kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("a special file")
    }
}

/// Opens `path` (following symlinks) for reading if it is a regular file, without blocking
/// on a FIFO.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(path)?;
    let meta = file.metadata()?;
    match kind(&meta) {
        Some(k) => Err(ReadError::NotRegular(k)),
        None => Ok((file, meta)),
    }
}

/// Reads the whole of `path`, a regular file of at most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between fstat and read: read one byte past the limit to notice.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}

/// Whether `path` is a regular file holding exactly `expected`: never blocks on a FIFO and
/// never reads more than `expected.len()` bytes (plus one, to see that it ends there).
pub fn holds(path: &Path, expected: &[u8]) -> bool {
    read(path, expected.len() as u64).is_ok_and(|bytes| bytes == expected)
}

/// Runs `f` on a thread of its own and waits at most `limit` for it. `None` on timeout; the
/// thread is then abandoned (a read stuck in the kernel cannot be cancelled), and costs
/// one idle thread rather than a frozen caller.
pub fn with_deadline<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("tokend-read".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(limit).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let cases: [(&Path, &str); 3] = [
            (
                Path::new("/dev/zero"),
                "is a character device, not a regular file",
            ),
            (&fifo, "is a FIFO (named pipe), not a regular file"),
            (dir.path(), "is a directory, not a regular file"),
        ];
        for (path, want) in cases {
            let err = read(path, 10).unwrap_err();
            assert_eq!(err.to_string(), want, "{}", path.display());
            assert!(!holds(path, b""), "{}", path.display());
        }
    }

    #[test]
    fn sizes_are_bounded_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read(&p, 5).unwrap(), b"12345");
        assert_eq!(
            read(&p, 4).unwrap_err().to_string(),
            "is larger than 4 bytes"
        );
        assert_eq!(
            read(&p, 4 << 10).unwrap(),
            b"12345",
            "a small file under a large limit"
        );
        assert!(holds(&p, b"12345"));
        assert!(!holds(&p, b"1234"));
        assert!(!holds(&p, b"123456"));
        assert_eq!(
            read(&dir.path().join("none"), 5).unwrap_err().to_string(),
            "no such file or directory"
        );
    }

    #[test]
    fn a_deadline_gives_up_on_work_that_hangs() {
        assert_eq!(with_deadline(Duration::from_secs(5), || 7), Some(7));
        let hung = with_deadline(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(3600))
        });
        assert_eq!(hung, None);
    }
}
