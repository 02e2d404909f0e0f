//! A serde/YAML error as one located sentence, with a "did you mean" for unknown keys.

/// A serde/YAML error as one sentence: location first, and for unknown keys the closest
/// valid key instead of serde's list of every possibility.
pub fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    // yaml_serde appends " at line L column C" for the error's own location; we put that
    // first instead. Anything after it is libyaml's context ("while scanning a quoted
    // scalar at line 5 column 16"), which often points at the real culprit: keep it.
    let (location, message) = match e.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            let message = match text.find(&at) {
                Some(i) => format!("{}{}", &text[..i], &text[i + at.len()..]),
                None => text.clone(),
            };
            (
                format!("line {} column {}: ", loc.line(), loc.column()),
                message,
            )
        }
        None => (String::new(), text.clone()),
    };
    let message = rewrite_unknown_field(&message).unwrap_or(message);
    format!("{location}{message}")
}

/// "unknown field `x`, expected one of `a`, `b`" → "unknown key `x`; did you mean `a`?",
/// and the same for enum values ("unknown variant").
fn rewrite_unknown_field(message: &str) -> Option<String> {
    let (start, marker, noun) = ["unknown field `", "unknown variant `"]
        .iter()
        .zip(["key", "value"])
        .find_map(|(m, noun)| message.find(m).map(|i| (i, *m, noun)))?;
    let prefix = &message[..start];
    let rest = &message[start + marker.len()..];
    let end = rest.find('`')?;
    let key = &rest[..end];
    let candidates: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    let hint = crate::util::did_you_mean(key, &candidates);
    let hint = if hint.is_empty() {
        format!("; valid {noun}s here: {}", candidates.join(", "))
    } else {
        hint
    };
    Some(format!("{prefix}unknown {noun} `{key}`{hint}"))
}
