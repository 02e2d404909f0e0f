//! Reading tokend's text log in tests.

/// The log without terminal colour codes.
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Log lines at `level` (text format: `TIME LEVEL message fields`).
pub fn lines_at(log: &str, level: &str) -> Vec<String> {
    plain(log)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(level))
        .map(str::to_owned)
        .collect()
}
