//! The Dockerfile as instructions per stage, and the build context as .dockerignore leaves it.

use super::ROOT;
use std::path::Path;

/// The binary the Dockerfile must build: `[[bin]]` names if any, else `[package] name`.
pub fn binary_name() -> String {
    let toml = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let (mut section, mut package, mut bins) = (String::new(), None, Vec::new());
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if let Some(v) = line
            .strip_prefix("name")
            .map(str::trim)
            .and_then(|l| l.strip_prefix('='))
        {
            let v = v.trim().trim_matches('"').to_owned();
            match section.as_str() {
                "[package]" => package = Some(v),
                "[[bin]]" => bins.push(v),
                _ => {}
            }
        }
    }
    assert!(
        bins.len() <= 1,
        "several [[bin]] targets: say which the image runs"
    );
    bins.pop().or(package).expect("[package] name")
}

pub struct Stage {
    pub name: Option<String>,
    /// `(INSTRUCTION, arguments)`, continuation lines joined.
    pub instructions: Vec<(String, String)>,
}

pub struct Dockerfile {
    pub stages: Vec<Stage>,
}

pub fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    let mut stages: Vec<Stage> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let joined = std::mem::take(&mut current);
                let (op, args) = joined
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((joined.trim(), ""));
                let (op, args) = (
                    op.to_ascii_uppercase(),
                    args.split_whitespace().collect::<Vec<_>>().join(" "),
                );
                if op == "FROM" {
                    let name = args
                        .split_once(" AS ")
                        .or(args.split_once(" as "))
                        .map(|(_, n)| n.to_owned());
                    stages.push(Stage {
                        name,
                        instructions: Vec::new(),
                    });
                }
                stages
                    .last_mut()
                    .expect("an instruction before FROM")
                    .instructions
                    .push((op, args));
            }
        }
    }
    assert!(!stages.is_empty(), "Dockerfile without FROM");
    Dockerfile { stages }
}

impl Dockerfile {
    fn last(&self) -> &Stage {
        self.stages.last().unwrap()
    }

    /// Sources of every `COPY`/`ADD` that reads the build context (not `--from=`).
    pub fn copy_sources(&self) -> Vec<String> {
        let mut sources = Vec::new();
        for (op, args) in self.stages.iter().flat_map(|s| &s.instructions) {
            if op != "COPY" && op != "ADD" {
                continue;
            }
            let words: Vec<&str> = args.split(' ').collect();
            if words.iter().any(|w| w.starts_with("--from")) {
                continue;
            }
            let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
            assert!(
                !args.starts_with('['),
                "JSON-form COPY is not read by this test: {args}"
            );
            sources.extend(paths[..paths.len() - 1].iter().map(|s| s.to_string()));
        }
        sources
    }

    /// Every `RUN` of the stages before the last one, joined.
    pub fn build_stage_text(&self) -> String {
        let build = &self.stages[..self.stages.len() - 1];
        assert!(!build.is_empty(), "no build stage");
        build
            .iter()
            .flat_map(|s| &s.instructions)
            .filter(|(op, _)| op == "RUN")
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>()
            .join(" && ")
    }

    /// `(source, destination)` of the final stage's `COPY --from=<an earlier stage>`.
    pub fn final_binary_copy(&self) -> (String, String) {
        let names: Vec<&str> = self
            .stages
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect();
        let (_, args) = self
            .last()
            .instructions
            .iter()
            .find(|(op, a)| {
                op == "COPY" && names.iter().any(|n| a.starts_with(&format!("--from={n} ")))
            })
            .expect("the final stage copies nothing from the build stage");
        let words: Vec<&str> = args.split(' ').filter(|w| !w.starts_with("--")).collect();
        assert_eq!(words.len(), 2, "COPY {args}");
        (words[0].to_owned(), words[1].to_owned())
    }

    pub fn entrypoint(&self) -> String {
        let found = self
            .last()
            .instructions
            .iter()
            .rev()
            .find(|(op, _)| op == "ENTRYPOINT");
        found.map(|(_, a)| a.clone()).expect("no ENTRYPOINT")
    }

    /// The final stage's `USER`, which must be numeric (`uid` or `uid:gid`) so the kubelet can
    /// enforce `runAsNonRoot` without reading /etc/passwd.
    pub fn user_uid(&self) -> u64 {
        let found = self
            .last()
            .instructions
            .iter()
            .rev()
            .find(|(op, _)| op == "USER");
        let (_, user) = found.expect("the final stage has no USER: it would run as root");
        let mut ids = user.split(':').map(|p| {
            p.parse::<u64>()
                .unwrap_or_else(|_| panic!("USER {user} is not numeric"))
        });
        let uid = ids.next().unwrap();
        assert!(ids.all(|gid| gid != 0), "USER {user}: group root");
        uid
    }
}

/// Whether `path` (relative to the context, the repository root) exists and .dockerignore keeps
/// it: the last matching pattern decides, `!` re-includes, a pattern matching a parent covers
/// everything below it.
pub fn in_context(path: &str) -> bool {
    let rel = path.trim_start_matches("./").trim_end_matches('/');
    if !Path::new(ROOT).join(rel).exists() {
        return false;
    }
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap_or_default();
    let parts: Vec<&str> = rel.split('/').collect();
    let mut kept = true;
    for line in ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (negated, pattern) = line.strip_prefix('!').map_or((false, line), |p| (true, p));
        let pat: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if (1..=parts.len())
            .any(|n| n == pat.len() && pat.iter().zip(&parts[..n]).all(|(p, s)| glob(p, s)))
        {
            kept = negated;
        }
    }
    kept
}

/// One path component against a `*`/`?` pattern.
fn glob(pattern: &str, name: &str) -> bool {
    match (pattern.chars().next(), name.chars().next()) {
        (None, None) => true,
        (Some('*'), _) => {
            glob(&pattern[1..], name)
                || (!name.is_empty()
                    && glob(pattern, &name[name.chars().next().unwrap().len_utf8()..]))
        }
        (Some('?'), Some(c)) => glob(&pattern[1..], &name[c.len_utf8()..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[p.len_utf8()..], &name[c.len_utf8()..]),
        _ => false,
    }
}
