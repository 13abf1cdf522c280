//! No message suggests a flag that does not exist: every `--flag` written in the workspace's
//! source (messages, help text, doc comments) is checked against the real binary's flags —
//! `therapygym CMD … --flag` against CMD's own flags, a bare `--flag` in `commands/CMD.rs`
//! against CMD's, and any other bare `--flag` against the flags of some command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Flags that are not ours but appear in our text (other tools' flags, cargo's, engines').
const FOREIGN: &[&str] = &[
    "--all-features",
    "--all-targets",
    "--locked",
    "--release",
    "--features",
    "--example",
    "--test",
    "--bin",
    "--help",
    "--version",
    "--no-fail-fast",
    "--workspace",
    "--quick",
    "--no-deps",
    "--only-binary",
    "--flag",
];

fn help(args: &[&str]) -> String {
    let o = common::bin().args(args).arg("--help").output().unwrap();
    assert!(o.status.success(), "{args:?} --help failed");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn flags_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("--") {
        let start = i + off;
        let prev_ok = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'-');
        let mut end = start + 2;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'-')
        {
            end += 1;
        }
        let name = text[start..end].trim_end_matches('-');
        if prev_ok && name.len() > 3 && b[start + 2].is_ascii_lowercase() {
            out.insert(name.to_string());
        }
        i = end.max(start + 2);
    }
    out
}

/// Subcommand name → the flags its `--help` lists.
fn commands() -> BTreeMap<String, BTreeSet<String>> {
    let top = help(&[]);
    let mut names = Vec::new();
    let mut in_commands = false;
    for line in top.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            // A command line has its name at column 2; continuation lines are indented further.
            if line
                .as_bytes()
                .get(2)
                .is_some_and(|c| c.is_ascii_lowercase())
            {
                let name = line.split_whitespace().next().unwrap();
                if name != "help" {
                    names.push(name.to_string());
                }
            }
        }
    }
    assert!(
        names.len() >= 10,
        "could not read the commands from --help:\n{top}"
    );
    names
        .into_iter()
        .map(|n| {
            let f = help(&[&n])
                .lines()
                .filter(|l| l.trim_start().starts_with('-'))
                .flat_map(|l| flags_in(l.split("  ").find(|p| p.contains("--")).unwrap_or("")))
                .collect();
            (n, f)
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_flag_a_message_suggests_exists() {
    let cmds = commands();
    let all: BTreeSet<&String> = cmds.values().flatten().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let own = file
            .parent()
            .filter(|p| p.ends_with("therapygym-cli/src/commands"))
            .and(file.file_stem())
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .map(|s| {
                if s == "import" {
                    "import-transcripts".into()
                } else {
                    s
                }
            })
            .filter(|s| cmds.contains_key(s));
        // Test modules quote flags of other tools and wrong flags on purpose.
        let body = text.split("#[cfg(test)]").next().unwrap_or(&text);
        for (n, line) in body.lines().enumerate() {
            let mut checked = BTreeSet::new();
            // `therapygym CMD … --flag`: up to the end of the quoted command.
            let mut rest = line;
            while let Some(at) = rest.find("therapygym ") {
                let after = &rest[at + "therapygym ".len()..];
                let cmd: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect();
                let span: String = after
                    .chars()
                    .take_while(|c| *c != '`' && *c != '"')
                    .collect();
                if let Some(known) = cmds.get(&cmd) {
                    for f in flags_in(&span) {
                        if !known.contains(&f) && !FOREIGN.contains(&f.as_str()) {
                            wrong.push(format!(
                                "{}:{}: `therapygym {cmd}` has no {f}",
                                file.display(),
                                n + 1
                            ));
                        }
                        checked.insert(f);
                    }
                }
                rest = &after[span.len().min(after.len())..];
            }
            for f in flags_in(line) {
                if checked.contains(&f) || FOREIGN.contains(&f.as_str()) {
                    continue;
                }
                let ok = match &own {
                    // A line that names another command (`export`) may give that one's flags.
                    Some(c)
                        if !line.contains("therapygym ")
                            && !cmds
                                .keys()
                                .any(|k| k != c && line.contains(&format!("`{k}`"))) =>
                    {
                        cmds[c].contains(&f)
                            || (line.trim_start().starts_with("//") && all.contains(&f))
                    }
                    _ => all.contains(&f),
                };
                if !ok {
                    let whose = own.as_deref().unwrap_or("any command");
                    wrong.push(format!("{}:{}: {whose} has no {f}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "messages suggest flags that do not exist:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_flag_reader_sees_flags_and_skips_other_dashes() {
    let f = flags_in("use `--resume DIR` or --out; not a--b, not ---, not -- x, `--judge-hash`");
    let v: Vec<&str> = f.iter().map(String::as_str).collect();
    assert_eq!(v, ["--judge-hash", "--out", "--resume"]);
}
