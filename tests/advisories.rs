//! Cargo.lock against the project's own list of advised crates (`tests/data/advised-crates.toml`).
//!
//! A crate with an open advisory may be linked only through the path its decision
//! page documents: as a dependency of the listed crates, never of ours directly.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
struct AdvisedList {
    #[serde(rename = "crate")]
    crates: Vec<Advised>,
}

#[derive(Deserialize)]
struct Advised {
    name: String,
    advisory: String,
    allowed_dependents: Vec<String>,
    decision: String,
}

#[derive(Deserialize)]
struct Lock {
    package: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    #[serde(default)]
    dependencies: Vec<String>,
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A Cargo.lock dependency entry is `name` or `name version` (when several
/// versions of a crate are in the tree).
fn names(entry: &str, crate_name: &str) -> bool {
    entry.split_whitespace().next() == Some(crate_name)
}

/// Which packages of the lock file depend on `crate_name`.
fn dependents<'a>(lock: &'a Lock, crate_name: &str) -> BTreeSet<&'a str> {
    lock.package
        .iter()
        .filter(|p| p.dependencies.iter().any(|d| names(d, crate_name)))
        .map(|p| p.name.as_str())
        .collect()
}

fn check(lock: &Lock, list: &AdvisedList) -> Vec<String> {
    let mut problems = Vec::new();
    for advised in &list.crates {
        let versions: Vec<&str> = lock
            .package
            .iter()
            .filter(|p| p.name == advised.name)
            .map(|p| p.version.as_str())
            .collect();
        if versions.is_empty() {
            continue;
        }
        for dependent in dependents(lock, &advised.name) {
            if !advised.allowed_dependents.iter().any(|a| a == dependent) {
                problems.push(format!(
                    "{} {versions:?} ({}) is linked through {dependent}, which {} does not document",
                    advised.name, advised.advisory, advised.decision
                ));
            }
        }
        let decision = read(&advised.decision);
        for must in std::iter::once(&advised.advisory)
            .chain(std::iter::once(&advised.name))
            .chain(&advised.allowed_dependents)
        {
            if !decision.contains(must.as_str()) {
                problems.push(format!("{} does not mention {must:?}", advised.decision));
            }
        }
    }
    problems
}

#[test]
fn advised_crates_are_linked_only_through_their_documented_paths() {
    let lock: Lock = toml::from_str(&read("Cargo.lock")).expect("Cargo.lock parses");
    let list: AdvisedList =
        toml::from_str(&read("tests/data/advised-crates.toml")).expect("the list parses");
    assert!(
        list.crates.iter().any(|c| c.name == "rsa"),
        "the list starts with `rsa`"
    );
    let problems = check(&lock, &list);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        !dependents(&lock, "rsa").contains("sf2520"),
        "sf2520 must not depend on the `rsa` crate itself"
    );
}

/// The check catches the failure it exists for: a lock file in which our own crate
/// (or anything not documented) pulls in `rsa`.
#[test]
fn an_undocumented_path_to_an_advised_crate_fails() {
    let lock: Lock = toml::from_str(
        r#"
[[package]]
name = "rsa"
version = "0.9.6"

[[package]]
name = "sf2520"
version = "0.1.0"
dependencies = ["rsa 0.9.6", "russh"]

[[package]]
name = "russh"
version = "0.65.1"
dependencies = ["rsa"]
"#,
    )
    .unwrap();
    let list: AdvisedList =
        toml::from_str(&read("tests/data/advised-crates.toml")).expect("the list parses");
    let problems = check(&lock, &list);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("through sf2520"), "{problems:?}");
}
