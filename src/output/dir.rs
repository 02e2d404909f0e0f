//! The `dir` output: the kubelet's atomic-writer layout for Secret volumes. Files live in a
//! timestamped directory; `..data` is a symlink to it, and each visible name is a symlink
//! through `..data`. One rename of `..data` switches every file at once, so a reader that
//! opens `dir/token` and `dir/expires_at` never gets them from two different tokens.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::SystemTime;

use crate::atomic::{self, Access};

pub const DATA_LINK: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Replaces the directory's contents with `files` unless they are already current.
/// Returns whether anything was written.
pub fn write(dir: &Path, files: &[(&str, Vec<u8>)], access: Access) -> io::Result<bool> {
    atomic::ensure_dir(dir, 0o755)?;
    if holds(dir, files) && modes_match(dir, files, access) {
        ensure_visible_links(dir, files)?;
        return Ok(false);
    }

    // Same naming as the kubelet: `..2026_11_21_23_10_00.<random>`.
    let stamp = humantime::format_rfc3339_nanos(SystemTime::now())
        .to_string()
        .replace(['-', ':', 'T'], "_")
        .trim_end_matches('Z')
        .to_owned();
    let version = tempfile::Builder::new()
        .prefix(&format!("..{stamp}."))
        .rand_bytes(6)
        .tempdir_in(dir)?;
    // Readable by the consumers the files' own modes allow; the directory hides nothing.
    fs::set_permissions(version.path(), fs::Permissions::from_mode(0o755))?;
    for (name, data) in files {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(version.path().join(name))?;
        atomic::prepare(&f, access)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    atomic::sync_dir(version.path())?;
    let version_name = version
        .path()
        .file_name()
        .expect("tempdir has a name")
        .to_owned();
    // From here the directory must outlive the guard: `..data` is about to point at it.
    let version_path = version.keep();

    let tmp_link = dir.join(DATA_TMP);
    let _ = fs::remove_file(&tmp_link);
    symlink(&version_name, &tmp_link)?;
    if let Err(e) = fs::rename(&tmp_link, dir.join(DATA_LINK)) {
        let _ = fs::remove_dir_all(&version_path);
        return Err(e);
    }
    atomic::sync_dir(dir)?;
    ensure_visible_links(dir, files)?;
    remove_old_versions(dir, &version_name.to_string_lossy());
    atomic::sync_dir(dir)?;
    Ok(true)
}

/// Whether `..data` currently holds exactly `files`: read back only from regular files and
/// never past the expected length, so `..data/token -> /dev/zero` or a FIFO is simply "not
/// current" and gets replaced.
pub fn holds(dir: &Path, files: &[(&str, Vec<u8>)]) -> bool {
    let data = dir.join(DATA_LINK);
    files
        .iter()
        .all(|(name, bytes)| crate::fsread::holds(&data.join(name), bytes))
}

fn modes_match(dir: &Path, files: &[(&str, Vec<u8>)], access: Access) -> bool {
    use std::os::unix::fs::MetadataExt;
    let data = dir.join(DATA_LINK);
    files.iter().all(|(name, _)| {
        fs::metadata(data.join(name)).is_ok_and(|m| {
            m.mode() & 0o7777 == access.mode && access.gid.is_none_or(|g| g == m.gid())
        })
    })
}

/// `dir/token -> ..data/token`, created once; replaced atomically if something else is there.
fn ensure_visible_links(dir: &Path, files: &[(&str, Vec<u8>)]) -> io::Result<()> {
    for (name, _) in files {
        let link = dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        if fs::read_link(&link).is_ok_and(|t| t == target) {
            continue;
        }
        let tmp = dir.join(format!("..{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        symlink(&target, &tmp)?;
        fs::rename(&tmp, &link)?;
    }
    Ok(())
}

/// Removes every version directory but the current one, including leftovers of a crash
/// between creating a version and swapping `..data`.
fn remove_old_versions(dir: &Path, current: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_version = name.starts_with("..")
            && name != DATA_LINK
            && name != DATA_TMP
            && name != current
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if is_version {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn files(token: &str) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("token", token.as_bytes().to_vec()),
            ("expires_at", format!("exp-of-{token}").into_bytes()),
        ]
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn swap_leaves_data_link_and_no_stale_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tokens/pharmacy");
        assert!(write(&dir, &files("one"), Access::PRIVATE).unwrap());
        assert!(write(&dir, &files("two"), Access::PRIVATE).unwrap());
        assert!(!write(&dir, &files("two"), Access::PRIVATE).unwrap());
        assert_eq!(fs::read(dir.join("token")).unwrap(), b"two");
        assert_eq!(fs::read(dir.join("expires_at")).unwrap(), b"exp-of-two");
        assert!(
            fs::symlink_metadata(dir.join(DATA_LINK))
                .unwrap()
                .is_symlink()
        );
        let names = entries(&dir);
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&"..data".to_owned()));
        assert_eq!(names.iter().filter(|n| n.starts_with("..2")).count(), 1);
        let mode = fs::metadata(dir.join("token")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn crash_leftovers_are_cleaned_on_next_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir(dir.join("..2020_01_01_00_00_00.abc")).unwrap();
        symlink("nowhere", dir.join(DATA_TMP)).unwrap();
        write(dir, &files("one"), Access::PRIVATE).unwrap();
        let versions: Vec<_> = entries(dir)
            .into_iter()
            .filter(|n| n.starts_with("..2"))
            .collect();
        assert_eq!(versions.len(), 1, "{versions:?}");
        assert!(!dir.join(DATA_TMP).exists());
    }
}
