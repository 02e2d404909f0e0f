//! Small helpers shared by several layers: human-readable I/O reasons, key suggestions,
//! and the one timestamp format tokend shows to people and writes to files.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An I/O error as the tail of a sentence: "permission denied", without "(os error 13)".
pub fn io_reason(e: &io::Error) -> String {
    // The OS text ("No such file or directory") says more than the kind ("entity not found").
    let full = e.to_string();
    let text = full.split(" (os error").next().unwrap_or(&full);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// tokend's effective user id: the owner every file it trusts must have.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Why a file or directory that someone else could have planted or changed must not be
/// trusted (tokend would publish its token, or signal its PID), or `None` if it may be.
/// `owners` are the uids allowed to own it; group or other write permission is never allowed,
/// and that includes sticky shared directories such as `/tmp`.
pub fn untrusted(meta: &std::fs::Metadata, owners: &[u32]) -> Option<String> {
    if !owners.contains(&meta.uid()) {
        let me = euid();
        let mut names: Vec<String> = Vec::new();
        for &uid in owners {
            let name = match uid {
                0 if me != 0 => "root".to_owned(),
                uid if uid == me => format!("tokend's user (uid {uid})"),
                uid => format!("uid {uid}"),
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        return Some(format!(
            "it is owned by uid {}, not by {}",
            meta.uid(),
            names.join(" or ")
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!("it is writable by other users (mode {mode:04o})"));
    }
    None
}

/// Provider text made safe for a terminal or a log line: control characters (ESC, CR, LF,
/// BEL, ...) become JSON-style escapes (`\u001b`, `\r`, `\n`), so a provider cannot move
/// the cursor, clear the screen or start a forged log line.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `; did you mean `x`?` when one candidate is close enough to be a likely typo.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// RFC 3339 in UTC, whole seconds: `2026-11-21T23:10:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A duration the way an operator reads it in a log line: `41m`, `3d 4h`, `2s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, mins, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!(
            "{m}m{}",
            if s > 0 {
                format!(" {s}s")
            } else {
                String::new()
            }
        ),
        (0, h, m) => format!(
            "{h}h{}",
            if m > 0 {
                format!(" {m}m")
            } else {
                String::new()
            }
        ),
        (d, h, _) => format!(
            "{d}d{}",
            if h > 0 {
                format!(" {h}h")
            } else {
                String::new()
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(
            did_you_mean("refresh_tokn", &["refresh_token", "refresh", "name"]),
            "; did you mean `refresh_token`?"
        );
        assert_eq!(did_you_mean("zzz", &["refresh_token", "name"]), "");
    }

    #[test]
    fn trust_needs_an_allowed_owner_and_no_foreign_write_bit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let me = euid();
        for (mode, owners, expect) in [
            (0o600, vec![me], None),
            (0o644, vec![me], None),
            (0o640, vec![0, me], None),
            (0o620, vec![me], Some("writable by other users (mode 0620)")),
            (
                0o1777,
                vec![me],
                Some("writable by other users (mode 1777)"),
            ),
            (0o600, vec![me + 1], Some("not by uid")),
        ] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let meta = std::fs::metadata(&file).unwrap();
            let got = untrusted(&meta, &owners);
            match expect {
                None => assert_eq!(got, None, "{mode:o}"),
                Some(text) => assert!(
                    got.as_deref().unwrap_or("").contains(text),
                    "{mode:o}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_control("a\u{1b}[2J\r\nINFO x\u{7}\t\u{85}é"),
            r"a\u001b[2J\r\nINFO x\u0007\t\u0085é"
        );
        assert_eq!(escape_control("plain text"), "plain text");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(41 * 60)), "41m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86400 + 4 * 3600)),
            "3d 4h"
        );
        assert_eq!(human_duration(Duration::from_secs(2)), "2s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn rfc3339_is_utc_seconds() {
        assert_eq!(
            rfc3339(from_unix_secs(1_800_000_000)),
            "2027-01-15T08:00:00Z"
        );
    }
}
