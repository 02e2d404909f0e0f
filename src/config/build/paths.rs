//! Paths: resolved against the config's directory, normalized, and checked across all
//! credentials for unique names and outputs that would overwrite each other.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::Errors;
use crate::output::{Output, Target};

pub(super) fn check_unique_names(credentials: &[(String, Vec<Output>)], errors: &mut Errors) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (name, _) in credentials {
        *seen.entry(name).or_default() += 1;
    }
    let mut dups: Vec<_> = seen.into_iter().filter(|(_, n)| *n > 1).collect();
    dups.sort();
    for (name, n) in dups {
        errors.push(
            &format!("credential `{name}`"),
            format!("the name is used {n} times; names must be unique"),
        );
    }
}

/// Two outputs on one path (or a file inside a `dir` output, or anything inside the state
/// directory) would overwrite each other. Paths are compared as the filesystem resolves them
/// (symlinks followed as far as they exist), so a link into the state directory cannot smuggle
/// an output over a state file. Paths are indexed once, so ten thousand outputs cost ten
/// thousand lookups, not fifty million comparisons.
pub(super) fn check_output_paths(
    credentials: &[(String, Vec<Output>)],
    state_dir: &Path,
    errors: &mut Errors,
) {
    let state_dir = resolved(state_dir);
    let mut by_path: HashMap<PathBuf, (&str, &Path)> = HashMap::new();
    let mut dirs: HashMap<PathBuf, (&str, &Path)> = HashMap::new();
    let mut all: Vec<(&str, &Path, PathBuf)> = Vec::new();
    let clash = |errors: &mut Errors, name: &str, path: &Path, other: &Path, other_name: &str| {
        errors.push(
            &format!("credential `{name}`"),
            format!(
                "output `{}` collides with output `{}` of credential `{other_name}`; two outputs cannot write the same path",
                path.display(),
                other.display()
            ),
        );
    };
    for (name, outputs) in credentials {
        for o in outputs {
            let written = o.path();
            let path = resolved(written);
            if path.starts_with(&state_dir) {
                let via = if path == normalize(written) {
                    String::new()
                } else {
                    format!(" (it resolves to `{}`)", path.display())
                };
                errors.push(
                    &format!("credential `{name}`"),
                    format!(
                        "output `{}` is inside state_dir `{}`{via}",
                        written.display(),
                        state_dir.display()
                    ),
                );
            }
            match by_path.get(&path) {
                Some((other_name, other)) => clash(errors, name, written, other, other_name),
                None => {
                    by_path.insert(path.clone(), (name, written));
                }
            }
            if matches!(o.target, Target::Dir { .. }) {
                dirs.insert(path.clone(), (name, written));
            }
            all.push((name, written, path));
        }
    }
    // Anything strictly inside a `dir` output: walk each path's ancestors.
    for (name, written, path) in &all {
        for ancestor in path.ancestors().skip(1) {
            if let Some((other_name, other)) = dirs.get(ancestor) {
                clash(errors, name, written, other, other_name);
            }
        }
    }
}

/// `p` as the filesystem will resolve it when tokend writes: the longest existing ancestor
/// canonicalized (symlinks followed), the rest appended lexically. Outputs and the state
/// directory are often created later, so a full `canonicalize` would fail.
fn resolved(p: &Path) -> PathBuf {
    let p = normalize(p);
    let mut rest = Vec::new();
    let mut cur = p.as_path();
    loop {
        if let Ok(real) = cur.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return normalize(&out);
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return p,
        }
    }
}

pub(super) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(super) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Lexical normalization (`a/./b/../c` → `a/c`), enough to catch two spellings of one path.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;
    use crate::atomic::Access;
    use crate::output::Format;

    #[test]
    fn lexical_normalization_and_resolution() {
        let cases = [
            ("/a/./b/../c", "/a/c"),
            ("/a/b/", "/a/b"),
            ("a/../../b", "b"),
            ("/", "/"),
        ];
        for (p, want) in cases {
            assert_eq!(normalize(Path::new(p)), Path::new(want), "{p}");
        }
        assert_eq!(
            resolve(Path::new("/etc/t"), Path::new("o/x")),
            Path::new("/etc/t/o/x")
        );
        assert_eq!(
            resolve(Path::new("/etc/t"), Path::new("/o/x")),
            Path::new("/o/x")
        );
    }

    // Under a directory that does not exist, so `resolved` stays lexical on any host.
    const ROOT: &str = "/nonexistent-tokend-test";

    fn out(path: &str, dir: bool) -> Output {
        let path = PathBuf::from(format!("{ROOT}{path}"));
        Output {
            target: if dir {
                Target::Dir { path }
            } else {
                Target::File {
                    path,
                    format: Format::Raw,
                }
            },
            access: Access {
                mode: 0o600,
                gid: None,
            },
        }
    }

    type Outputs<'a> = Vec<(&'a str, Vec<Output>)>;

    fn clashes(credentials: &[(&str, Vec<Output>)]) -> Vec<String> {
        let owned: Vec<(String, Vec<Output>)> = credentials
            .iter()
            .map(|(n, o)| (n.to_string(), o.clone()))
            .collect();
        let state = PathBuf::from(format!("{ROOT}/state"));
        run(|_, e, _| {
            check_unique_names(&owned, e);
            check_output_paths(&owned, &state, e)
        })
        .1
    }

    #[test]
    fn outputs_that_would_overwrite_each_other() {
        let r = ROOT;
        assert_eq!(
            clashes(&[("a", vec![out("/a", false)]), ("b", vec![out("/b", false)])]),
            Vec::<String>::new()
        );
        let cases: Vec<(Outputs, Vec<String>)> = vec![
            (
                vec![
                    ("a", vec![out("/t", false)]),
                    ("b", vec![out("/x/../t", false)]),
                ],
                vec![format!(
                    "credential `b`: output `{r}/x/../t` collides with output `{r}/t` of credential `a`; two outputs cannot write the same path"
                )],
            ),
            (
                vec![
                    ("a", vec![out("/d", true)]),
                    ("b", vec![out("/d/t", false)]),
                ],
                vec![format!(
                    "credential `b`: output `{r}/d/t` collides with output `{r}/d` of credential `a`; two outputs cannot write the same path"
                )],
            ),
            (
                vec![
                    ("a", vec![out("/d", true)]),
                    ("b", vec![out("/d/sub/t", false)]),
                ],
                vec![format!(
                    "credential `b`: output `{r}/d/sub/t` collides with output `{r}/d` of credential `a`; two outputs cannot write the same path"
                )],
            ),
            (
                vec![("a", vec![out("/state/./t", false)])],
                vec![format!(
                    "credential `a`: output `{r}/state/./t` is inside state_dir `{r}/state`"
                )],
            ),
            (
                vec![("a", vec![out("/1", false)]), ("a", vec![out("/2", false)])],
                vec!["credential `a`: the name is used 2 times; names must be unique".to_owned()],
            ),
        ];
        for (credentials, want) in cases {
            assert_eq!(clashes(&credentials), want);
        }
    }
}
