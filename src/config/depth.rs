//! A nesting-depth limit checked before the YAML parser runs.
//!
//! libyaml is quadratic in the depth of flow collections: `[[[…]]]` 20 000 levels deep
//! takes seconds and 100 000 levels minutes, before serde's recursion limit ever sees an
//! event. A tokend config is a handful of levels deep, so a cheap lexical scan refuses
//! anything deeper than [`MAX_DEPTH`] with the line and column where it happens.
//!
//! The scan is not a YAML parser; it errs towards counting less, never more, on valid
//! configs: quoted scalars, comments and block scalar bodies (`|`, `>`) are skipped, and
//! `[`/`{` open a collection only where a YAML token can start.

/// Far deeper than any tokend config (about ten levels, JSON bodies of `http_json` included).
pub const MAX_DEPTH: usize = 64;

/// `Err("line L column C: …")` when the text nests deeper than [`MAX_DEPTH`].
pub fn check(text: &str) -> Result<(), String> {
    let mut flow = 0usize;
    // Indentation of each open block collection, outermost first.
    let mut indents: Vec<usize> = Vec::new();
    // Some(parent indent) while inside a block scalar's body.
    let mut block_scalar: Option<usize> = None;
    // Inside a quoted scalar that continues on the next line.
    let mut quote: Option<char> = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let blank = line.trim().is_empty();
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        if quote.is_none() && flow == 0 && !blank && !line.trim_start().starts_with('#') {
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            i = indent;
            // Compact nesting on one line: `- - - x`, `? - x`.
            while i < chars.len()
                && matches!(chars[i], '-' | '?')
                && chars.get(i + 1).is_none_or(|c| *c == ' ')
            {
                indents.push(usize::MAX);
                i += 2;
            }
            let depth = indents.len();
            indents.retain(|&d| d != usize::MAX);
            if depth > MAX_DEPTH {
                return Err(too_deep(n, i));
            }
        }
        let mut prev = ' ';
        // The last character that was not a space on this line: a value may only start
        // after `:`, `-`, `?` (or a flow indicator), so `it's [x` is one plain scalar.
        let mut last: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = quote {
                if c == '\\' && q == '"' {
                    i += 1;
                } else if c == q {
                    if q == '\'' && chars.get(i + 1) == Some(&'\'') {
                        i += 1;
                    } else {
                        quote = None;
                    }
                }
                prev = c;
                last = Some(c);
                i += 1;
                continue;
            }
            let after = |set: &[char]| last.is_none_or(|l| set.contains(&l));
            let value_start = if flow > 0 {
                after(&['[', '{', ',', ':', '-', '?'])
            } else {
                prev == ' ' && after(&[':', '-', '?'])
            };
            match c {
                '#' if prev == ' ' || last.is_none() => break,
                '"' | '\'' if value_start => quote = Some(c),
                '[' | '{' if flow > 0 || value_start => {
                    flow += 1;
                    if indents.len() + flow > MAX_DEPTH {
                        return Err(too_deep(n, i));
                    }
                }
                ']' | '}' if flow > 0 => flow -= 1,
                _ => {}
            }
            if c != ' ' {
                last = Some(c);
            }
            prev = c;
            i += 1;
        }
        // `key: |`, `- >-`, `key: |2+`: the more indented lines that follow are text.
        if quote.is_none() && flow == 0 {
            let code = strip_comment(line).trim_end();
            let mut words = code.split_whitespace().rev();
            let is_indicator = |w: &str| {
                w.starts_with(['|', '>'])
                    && w[1..]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
            };
            if words.next().is_some_and(is_indicator)
                && words.next().is_none_or(|w| w.ends_with(':') || w == "-")
            {
                block_scalar = Some(indent);
            }
        }
    }
    Ok(())
}

fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn too_deep(line: usize, column: usize) -> String {
    format!(
        "line {} column {}: the YAML is nested more than {MAX_DEPTH} levels deep; a tokend \
         config needs about ten (is this the right file?)",
        line + 1,
        column + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configs_pass() {
        let example = include_str!("../../examples/config.yaml");
        assert_eq!(check(example), Ok(()));
        for text in [
            "a: [1, [2, {b: [3]}]]\n",
            // Brackets inside scalars, quotes, comments and block scalars do not count.
            &format!(
                "t: \"{}\"\nu: '{}'\n# {}\n",
                "[".repeat(200),
                "{".repeat(200),
                "[".repeat(200)
            ),
            &format!(
                "t: |\n  {}\n  {}\nnext: 1\n",
                "[".repeat(200),
                "{".repeat(200)
            ),
            &format!("t: >-\n    {}\nnext: [1]\n", "[".repeat(200)),
            &format!("plain: it's [{}\n", "x[".repeat(200)),
            "q: 'it''s [ a quote'\nr: \"esc \\\" [\"\n",
        ] {
            assert_eq!(check(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn deep_nesting_fails_with_its_position() {
        let cases = [
            (
                format!("a: {}{}\n", "[".repeat(100), "]".repeat(100)),
                "line 1 column",
            ),
            (
                format!("a: {}1{}\n", "{b: ".repeat(100), "}".repeat(100)),
                "line 1 column",
            ),
            (format!("a:\n{}x\n", "- ".repeat(100)), "line 2 column"),
            (
                (0..100)
                    .map(|d| format!("{}k{d}:\n", " ".repeat(d)))
                    .collect::<String>(),
                "line 65 column",
            ),
            (format!("a: [\n{}\n]\n", "[".repeat(100)), "line 2 column"),
        ];
        for (text, at) in cases {
            let err = check(&text).unwrap_err();
            assert!(err.starts_with(at), "{err}");
            assert!(err.contains("nested more than 64 levels deep"), "{err}");
        }
    }

    #[test]
    fn the_limit_itself_is_allowed() {
        let text = format!(
            "{}{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(check(&text), Ok(()));
        let text = format!("{}{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check(&text).is_err());
    }
}
