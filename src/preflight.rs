//! Checks, before any provider is called, that tokend can write where the config says it
//! writes: an output or state directory on a read-only mount fails every refresh otherwise.
//!
//! The usual cause is systemd's `ProtectSystem=strict` (the shipped unit has it), under which
//! only `ReadWritePaths=` and the unit's own directories are writable; the message says so.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// One place tokend must write to and cannot, as a sentence for the operator.
pub fn unwritable(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(why) = problem(&config.state_dir) {
        problems.push(format!("state_dir `{}`: {why}", config.state_dir.display()));
    }
    for c in &config.credentials {
        for o in &c.outputs {
            // A file is replaced by a rename in its directory; a `dir` output is written inside.
            let dir = match &o.target {
                crate::output::Target::File { path, .. } => path.parent().unwrap_or(path),
                crate::output::Target::Dir { path } => path.as_path(),
            };
            if let Some(why) = problem(dir) {
                problems.push(format!(
                    "credential `{}`: output `{}`: {why}",
                    c.name,
                    o.path().display()
                ));
            }
        }
    }
    problems
}

/// Why `dir` (or, when it does not exist yet, the ancestor it will be created in) cannot be
/// written by this process.
fn problem(dir: &Path) -> Option<String> {
    let existing = nearest_existing(dir)?;
    if !existing.is_dir() {
        return Some(format!("`{}` is not a directory", existing.display()));
    }
    let read_only = nix::sys::statvfs::statvfs(&existing)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false);
    if read_only {
        return Some(format!(
            "`{}` is on a read-only file system; under systemd (ProtectSystem=strict) add \
             `ReadWritePaths={}` to the unit with `systemctl edit tokend`",
            existing.display(),
            dir.display()
        ));
    }
    if let Err(e) = nix::unistd::access(&existing, nix::unistd::AccessFlags::W_OK) {
        return Some(format!(
            "`{}` is not writable by uid {} ({}); fix its owner or mode, or under systemd \
             add `ReadWritePaths={}`",
            existing.display(),
            nix::unistd::geteuid(),
            e.desc(),
            dir.display()
        ));
    }
    None
}

fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_ok())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_judged_by_the_ancestor_it_will_be_created_in() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        assert_eq!(nearest_existing(&deep).unwrap(), tmp.path());
        assert_eq!(problem(&deep), None);
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let why = problem(&file.join("sub")).unwrap();
        assert!(why.contains("is not a directory"), "{why}");
    }
}
