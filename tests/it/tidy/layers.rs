//! The layer order, checked on the source text: the lower layers (leaf utilities, config,
//! pg, data_dir) name nothing above them, and the pooler's modules form no cycle.
//!
//! A reference is any `crate::…` path, or a `super::…` path that climbs out of its
//! module (`super::super::ha` in src/pg/conf.rs is `crate::ha`), `use` groups included.
//! Comments, strings and character literals are skipped; inline modules (`mod tests {`)
//! count as one level deeper, as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use super::{root, rust_files};

/// The lower layers, bottom up: a module may name only modules on an earlier line.
/// Every other top-level module (pooler, ha, backup, api, cli, tenants, metrics, agent,
/// supervisor, status, and anything new) is above them all.
const LOWER_LAYERS: &[&[&str]] = &[
    &["run_as", "logging", "tls_pin", "accept_errors", "shutdown"],
    &["safe_file"],
    &["config"],
    &["pg"],
    &["data_dir"],
];

fn rank(module: &str) -> Option<usize> {
    LOWER_LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
}

#[test]
fn lower_layers_import_nothing_from_higher_ones() {
    let sources = sources();
    let present: BTreeSet<&str> = sources
        .iter()
        .filter_map(|(_, m, _)| m.first().map(String::as_str))
        .collect();
    for module in LOWER_LAYERS.iter().copied().flatten() {
        assert!(
            present.contains(module),
            "LOWER_LAYERS names `{module}`, not in src/"
        );
    }
    let mut wrong = Vec::new();
    for (path, module, text) in sources {
        wrong.extend(
            layer_violations(&module, &text)
                .into_iter()
                .map(|named| format!("{}: names `{named}`", path)),
        );
    }
    assert!(
        wrong.is_empty(),
        "lower layers name higher ones (move the item down, or pass it in):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_pooler_modules_form_no_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let sources = sources();
    let submodules: BTreeSet<&str> = sources
        .iter()
        .filter(|(_, m, _)| m.len() >= 2 && m[0] == "pooler")
        .map(|(_, m, _)| m[1].as_str())
        .collect();
    for (_, module, text) in &sources {
        // mod.rs holds the shared `Pooler` every part uses; its children are the graph.
        if module.len() < 2 || module[0] != "pooler" {
            continue;
        }
        for named in references(module, text) {
            if named.len() >= 2
                && named[0] == "pooler"
                && named[1] != module[1]
                && submodules.contains(named[1].as_str())
            {
                edges
                    .entry(module[1].clone())
                    .or_default()
                    .insert(named[1].clone());
            }
        }
    }
    assert_eq!(find_cycle(&edges), None, "a cycle among pooler modules");
    // The edges the layering was made for stay one-way.
    for (from, to) in [
        ("login", "client"),
        ("login", "admin"),
        ("login", "session"),
        ("pool", "server"),
    ] {
        assert!(
            edges.get(from).is_some_and(|named| named.contains(to)),
            "{from} no longer uses {to}: is the scanner still reading the pooler?"
        );
    }
}

#[test]
fn the_crate_top_level_modules_form_no_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, module, text) in &sources() {
        let Some(from) = module.first() else { continue };
        for named in references(module, text) {
            if let Some(to) = named.first().filter(|to| *to != from) {
                edges.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    assert_eq!(
        find_cycle(&edges),
        None,
        "a cycle among the crate's modules"
    );
    assert!(
        edges
            .get("agent")
            .is_some_and(|named| named.contains("pooler")),
        "agent no longer uses pooler: is the scanner still reading the crate?"
    );
}

/// The pooler's pure layers (ARCHITECTURE.md's invariants: no I/O), which name only each
/// other; `admin/command.rs` too.
const POOLER_PURE: &[&str] = &[
    "protocol", "scram", "txn", "prepared", "params", "route", "pin",
];

#[test]
fn the_pooler_pure_layers_name_nothing_of_its_io_shell() {
    let pure = |m: &[String]| {
        m.len() >= 2
            && m[0] == "pooler"
            && (POOLER_PURE.contains(&m[1].as_str())
                || m.get(1..3) == Some(&["admin".into(), "command".into()]))
    };
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (path, module, text) in sources() {
        if !pure(&module) {
            continue;
        }
        checked += 1;
        for named in references(&module, &text) {
            let inside = named.len() >= 2 && named[0] == "pooler";
            if !inside || !pure(&named) {
                wrong.push(format!("{path}: names `{}`", named.join("::")));
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} pure files found: is the scanner reading src?"
    );
    assert!(
        wrong.is_empty(),
        "pure layers name other parts:\n{}",
        wrong.join("\n")
    );
}

/// Every source file under src/ with its module path and text.
fn sources() -> Vec<(String, Vec<String>, String)> {
    let src = root().join("src");
    rust_files(&src)
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).ok()?.to_owned();
            let module = module_path(&relative);
            let text = fs::read_to_string(&path).ok()?;
            Some((relative.display().to_string(), module, text))
        })
        .collect()
}

/// src/pg/conf.rs is `pg::conf`, src/pg/mod.rs `pg`, src/lib.rs the crate root.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The higher (or same-or-higher lower) modules a file of `module` names.
fn layer_violations(module: &[String], text: &str) -> BTreeSet<String> {
    let Some(own) = module.first().and_then(|m| rank(m)) else {
        return BTreeSet::new();
    };
    references(module, text)
        .into_iter()
        .filter_map(|named| named.into_iter().next())
        .filter(|top| *top != module[0] && rank(top).is_none_or(|r| r >= own))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Path,
    Open,
    Close,
    Comma,
    Other,
}

/// Rust source as the few tokens paths are made of; comments and literals are dropped.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && at(i + 1) == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Token::Other);
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{7f}'); otherwise a lifetime's quote.
            if at(i + 1) == '\\' {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
            out.push(Token::Other);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let hashes = (i..).take_while(|&j| at(j) == '#').count();
            if matches!(word.as_str(), "r" | "br") && at(i + hashes) == '"' {
                // A raw string: r"…", r#"…"# (not a raw identifier, r#type).
                i += hashes + 1;
                let end: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                while i < chars.len() && !chars[i..].starts_with(&end) {
                    i += 1;
                }
                i += end.len();
                out.push(Token::Other);
            } else {
                out.push(Token::Ident(word));
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Token::Path);
            i += 2;
        } else {
            out.push(match c {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

/// Every absolute path `text` (a file of `module`) names by `crate::` or by a `super::`
/// that climbs, as segments from the crate root.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let tokens = tokens(text);
    let ident = |i: usize| match tokens.get(i) {
        Some(Token::Ident(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut out = Vec::new();
    // Inline modules open at a brace depth: (name, depth).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth: usize = 0;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Ident(w) if w == "mod" && tokens.get(i + 2) == Some(&Token::Open) => {
                if let Some(name) = ident(i + 1) {
                    inline.push((name.to_owned(), depth));
                }
            }
            Token::Ident(w)
                if (w == "crate" || w == "super")
                    && tokens.get(i + 1) == Some(&Token::Path)
                    && (i == 0 || tokens[i - 1] != Token::Path) =>
            {
                let mut base: Vec<String> = if w == "crate" {
                    i += 2;
                    Vec::new()
                } else {
                    let mut here: Vec<String> = module
                        .iter()
                        .cloned()
                        .chain(inline.iter().map(|(n, _)| n.clone()))
                        .collect();
                    while ident(i) == Some("super") && tokens.get(i + 1) == Some(&Token::Path) {
                        here.pop();
                        i += 2;
                    }
                    here
                };
                i = tail(&tokens, i, &mut base, &mut out);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads `a::b::{c, d::e}` from `i` on, each path appended to `base`; returns where
/// the path ends.
fn tail(
    tokens: &[Token],
    mut i: usize,
    base: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let start = base.len();
    while let Some(Token::Ident(w)) = tokens.get(i) {
        base.push(w.clone());
        i += 1;
        if tokens.get(i) != Some(&Token::Path) {
            break;
        }
        i += 1;
    }
    if tokens.get(i) == Some(&Token::Open) && tokens.get(i.wrapping_sub(1)) == Some(&Token::Path) {
        i += 1;
        while i < tokens.len() && tokens[i] != Token::Close {
            if tokens[i] == Token::Comma {
                i += 1;
                continue;
            }
            let before = i;
            i = tail(tokens, i, base, out);
            if i == before {
                i += 1;
            }
        }
        i += 1;
    } else if base.len() > start {
        out.push(base.clone());
    }
    base.truncate(start);
    i
}

/// One cycle of `edges`, as the modules on it, if there is any.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

mod scanner {
    use super::*;

    fn module(path: &str) -> Vec<String> {
        module_path(Path::new(path))
    }

    fn named(path: &str, text: &str) -> Vec<String> {
        layer_violations(&module(path), text).into_iter().collect()
    }

    #[test]
    fn escapes_to_higher_layers_are_caught() {
        assert_eq!(
            named("config/ha.rs", "use crate::ha::decide::SyncMode;"),
            ["ha"]
        );
        assert_eq!(
            named(
                "config/api.rs",
                "Some(crate::pooler::tls::generated_paths(d).0)"
            ),
            ["pooler"]
        );
        assert_eq!(
            named(
                "pg/conf.rs",
                "use super::super::supervisor::LOG_LINE_PREFIX;"
            ),
            ["supervisor"]
        );
        assert_eq!(
            named("data_dir.rs", "super::backup::state::read(p)"),
            ["backup"]
        );
        assert_eq!(
            named(
                "pg/conf.rs",
                "use crate::{config::Parameters, tenants::{a, b}};"
            ),
            ["tenants"]
        );
        // A lower layer above its own rank: config sits below pg.
        assert_eq!(
            named("config/mod.rs", "crate::pg::conf::quote_value(s)"),
            ["pg"]
        );
        // Leaf utilities name no other layer.
        assert_eq!(
            named("safe_file.rs", "use crate::pg::process::RunAs;"),
            ["pg"]
        );
        // Anything not known to be low is high.
        assert_eq!(
            named("pg/hba.rs", "crate::brand_new::thing()"),
            ["brand_new"]
        );
    }

    #[test]
    fn own_and_lower_modules_and_non_code_pass() {
        let fine = r#"
            use super::process::command;
            use super::{invalid, ConfigError};
            use crate::{config::Parameters, safe_file, run_as::RunAs};
            // crate::ha::decide in a comment
            /* crate::pooler in a block comment */
            let s = "crate::backup in a string";
            let r = r"crate::api";
            let c = '{';
            fn f<'a>(x: &'a str) -> &'a str { x }
            #[cfg(test)]
            mod tests {
                use super::super::hba::render;
                use super::*;
            }
        "#;
        assert!(
            named("pg/conf.rs", fine).is_empty(),
            "{:?}",
            named("pg/conf.rs", fine)
        );
        // Higher layers are not checked here.
        assert!(named("ha/node.rs", "use crate::pooler::Pooler;").is_empty());
    }

    #[test]
    fn paths_resolve_from_the_crate_root() {
        let m = module("pooler/client/large.rs");
        assert_eq!(
            references(&m, "use super::super::route::{route_streamed, Rewrite};"),
            [
                vec!["pooler", "route", "route_streamed"],
                vec!["pooler", "route", "Rewrite"]
            ]
        );
        assert_eq!(
            references(&m, "super::fatal(x)"),
            [vec!["pooler", "client", "fatal"]]
        );
    }

    #[test]
    fn a_cycle_is_found_and_a_chain_is_not() {
        let graph = |pairs: &[(&str, &str)]| {
            let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                edges
                    .entry(a.to_string())
                    .or_default()
                    .insert(b.to_string());
            }
            edges
        };
        let chain = graph(&[
            ("login", "client"),
            ("client", "session"),
            ("login", "session"),
        ]);
        assert_eq!(find_cycle(&chain), None);
        let cycle = graph(&[("login", "client"), ("client", "admin"), ("admin", "login")]);
        assert_eq!(
            find_cycle(&cycle),
            Some(vec!["admin".into(), "login".into(), "client".into()])
        );
    }
}
