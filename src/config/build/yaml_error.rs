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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_values_get_a_hint() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "credentials[0]: unknown field `outptus`, expected one of `name`, `outputs`",
                Some("credentials[0]: unknown key `outptus`; did you mean `outputs`?"),
            ),
            (
                "unknown variant `oauth3`, expected one of `vandar`, `oauth2`",
                Some("unknown value `oauth3`; did you mean `oauth2`?"),
            ),
            (
                "unknown field `zzz`, expected one of `name`, `outputs`",
                Some("unknown key `zzz`; valid keys here: name, outputs"),
            ),
            ("invalid type: string, expected a map", None),
        ];
        for (message, want) in cases {
            assert_eq!(
                rewrite_unknown_field(message).as_deref(),
                *want,
                "{message}"
            );
        }
    }

    #[test]
    fn the_location_comes_first() {
        let e = serde_yaml::from_str::<crate::config::raw::RawConfig>("state_dir: /s\nlisen: x\n")
            .unwrap_err();
        assert_eq!(
            describe_yaml_error(&e),
            "line 2 column 1: unknown key `lisen`; did you mean `listen`?"
        );
    }
}
