//! The backup module reads one way: each of its files uses only files of lower layers,
//! so there is no cycle (base ↔ catalog ↔ restore ↔ verify was one). A new file must be
//! given its layer here.

use std::collections::BTreeMap;

/// Lowest first. A module may use modules of strictly lower layers only.
const LAYERS: &[&[&str]] = &[
    &["layout", "lock", "key", "walk"],
    &["envelope"],
    &["repo", "manifest"],
    &["wal", "catalog", "state", "context", "tar_stream", "untar"],
    &["marks", "counts", "unpack", "coverage"],
    &["base", "dump", "verify", "restore", "expire"],
    &["drill"],
    &["check", "schedule"],
    &["mod"],
];

#[test]
fn backup_modules_use_only_lower_layers() {
    let rank: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |m| (*m, i)))
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backup");
    let mut files: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let name = match path.extension().and_then(|e| e.to_str()) {
            Some("rs") => path.file_stem().unwrap().to_string_lossy().into_owned(),
            _ if path.is_dir() => path.file_name().unwrap().to_string_lossy().into_owned(),
            _ => continue,
        };
        let text = if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .flatten()
                .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
                .collect()
        } else {
            std::fs::read_to_string(&path).unwrap()
        };
        files.push((name, text));
    }
    let mut wrong = Vec::new();
    for (name, text) in &files {
        let Some(&own) = rank.get(name.as_str()) else {
            wrong.push(format!("src/backup/{name} has no layer in LAYERS"));
            continue;
        };
        // The repository's own files use `super::` among themselves.
        let prefixes: &[&str] = if name == "repo" || name == "mod" {
            &["crate::backup::"]
        } else {
            &["super::", "crate::backup::"]
        };
        for used in rank.keys() {
            if used == name {
                continue;
            }
            let named = prefixes.iter().any(|p| {
                let needle = format!("{p}{used}");
                text.match_indices(&needle).any(|(at, _)| {
                    let next = text[at + needle.len()..].chars().next();
                    !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            }) || uses_in_braces(text, used);
            if named && rank[used] >= own {
                wrong.push(format!(
                    "{name} (layer {own}) uses {used} (layer {})",
                    rank[used]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "backup layering broken:\n{}",
        wrong.join("\n")
    );
}

/// `use super::{a, b};`
fn uses_in_braces(text: &str, module: &str) -> bool {
    text.match_indices("use super::{").any(|(at, m)| {
        let rest = &text[at + m.len()..];
        let inner = &rest[..rest.find('}').unwrap_or(rest.len())];
        inner
            .split(',')
            .any(|part| part.trim().split("::").next() == Some(module))
    })
}
