//! Style invariants checked as tests (rust-analyzer's tidy): module headers, file size,
//! the pure protocol codec, no silent `#[ignore]`, the layer order (`tidy/layers.rs`).

mod layers;

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let missing: Vec<_> = rust_files(&root().join("src"))
        .into_iter()
        .chain(rust_files(&root().join("tests")))
        .filter(|p| !fs::read_to_string(p).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:?}"
    );
}

#[test]
fn no_file_is_over_800_lines() {
    let long: Vec<_> = rust_files(&root().join("src"))
        .into_iter()
        .chain(rust_files(&root().join("tests")))
        .filter_map(|p| {
            let lines = fs::read_to_string(&p).unwrap().lines().count();
            (lines > 800).then_some((p, lines))
        })
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

#[test]
fn the_protocol_codec_does_no_io_and_never_panics_on_input() {
    let forbidden = [
        "tokio",
        "tracing",
        "std::net",
        "std::fs",
        ".get_u8(",
        ".get_i32(",
        ".get_u32(",
        ".get_i16(",
        "unimplemented!",
        "todo!",
    ];
    for path in rust_files(&root().join("src/pooler/protocol")) {
        let text = fs::read_to_string(&path).unwrap();
        for word in forbidden {
            assert!(!text.contains(word), "{} mentions `{word}`", path.display());
        }
    }
}

#[test]
fn ignored_tests_say_why() {
    for path in rust_files(&root().join("tests"))
        .into_iter()
        .chain(rust_files(&root().join("src")))
    {
        let text = fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let line = line.trim();
            assert!(
                !(line.starts_with("#[ignore]")),
                "{}: `#[ignore]` without a reason (use #[ignore = \"why\"])",
                path.display()
            );
        }
    }
}
