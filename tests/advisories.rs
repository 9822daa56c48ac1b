//! Cargo.lock against the project's own list of advised crates (`tests/data/advised-crates.toml`).
//!
//! A crate with an open advisory may be linked only through the path its decision
//! page documents: as a dependency of the listed crates, never of ours directly.
//! An advisory with a fix (`fixed`) binds only the versions below the fix: from
//! the fixed version on, the crate may be linked from anywhere.

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
    /// The first version without the flaw (semver order: `0.7.18` fixes `0.7.9`,
    /// not `0.7.18-rc.1`).
    #[serde(default)]
    fixed: Option<String>,
    /// Who may link a version below `fixed` (any version, without `fixed`)...
    #[serde(default)]
    allowed_dependents: Vec<String>,
    /// ...and the page that says why that is safe. Needed unless `fixed` is given.
    #[serde(default)]
    decision: Option<String>,
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
/// versions of a crate are in the tree): does it name one of `versions`? (A bare
/// `name` means the lock holds one version of the crate; `versions` are some of
/// the lock's versions of it, so that one is among them if any is.)
fn names(entry: &str, crate_name: &str, versions: &[&str]) -> bool {
    let mut words = entry.split_whitespace();
    words.next() == Some(crate_name)
        && !versions.is_empty()
        && words
            .next()
            .is_none_or(|version| versions.contains(&version))
}

/// The versions of `crate_name` in the lock file.
fn versions<'a>(lock: &'a Lock, crate_name: &str) -> Vec<&'a str> {
    lock.package
        .iter()
        .filter(|p| p.name == crate_name)
        .map(|p| p.version.as_str())
        .collect()
}

/// Which packages of the lock file depend on one of these versions of `crate_name`.
fn dependents<'a>(lock: &'a Lock, crate_name: &str, versions: &[&str]) -> BTreeSet<&'a str> {
    lock.package
        .iter()
        .filter(|p| {
            p.dependencies
                .iter()
                .any(|d| names(d, crate_name, versions))
        })
        .map(|p| p.name.as_str())
        .collect()
}

/// `major.minor.patch` and the pre-release part, which sorts a version before its
/// release (semver; two pre-releases compare as text, close enough for a list kept
/// by hand); build metadata does not count.
fn semver(version: &str) -> ([u64; 3], Option<&str>) {
    let version = version.split('+').next().unwrap_or(version);
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let mut numbers = [0; 3];
    for (slot, part) in numbers.iter_mut().zip(core.split('.')) {
        *slot = part
            .parse()
            .unwrap_or_else(|e| panic!("version {version:?}: {e}"));
    }
    (numbers, pre)
}

/// Whether `version` is `fixed` or later.
fn at_least(version: &str, fixed: &str) -> bool {
    let ((v, v_pre), (f, f_pre)) = (semver(version), semver(fixed));
    match v.cmp(&f) {
        std::cmp::Ordering::Equal => match (v_pre, f_pre) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(v_pre), Some(f_pre)) => v_pre >= f_pre,
        },
        order => order.is_gt(),
    }
}

fn advised_list() -> AdvisedList {
    toml::from_str(&read("tests/data/advised-crates.toml")).expect("the list parses")
}

fn check(lock: &Lock, list: &AdvisedList) -> Vec<String> {
    let mut problems = Vec::new();
    for advised in &list.crates {
        if advised.fixed.is_none() && advised.decision.is_none() {
            problems.push(format!(
                "{} ({}) has neither `fixed` nor `decision`",
                advised.name, advised.advisory
            ));
            continue;
        }
        let affected: Vec<&str> = versions(lock, &advised.name)
            .into_iter()
            .filter(|v| {
                advised
                    .fixed
                    .as_ref()
                    .is_none_or(|fixed| !at_least(v, fixed))
            })
            .collect();
        if affected.is_empty() {
            continue;
        }
        for dependent in dependents(lock, &advised.name, &affected) {
            if !advised.allowed_dependents.iter().any(|a| a == dependent) {
                let remedy = match (&advised.decision, &advised.fixed) {
                    (Some(decision), _) => format!("which {decision} does not document"),
                    (None, Some(fixed)) => format!("but only {fixed} or later is allowed"),
                    (None, None) => unreachable!("checked above"),
                };
                problems.push(format!(
                    "{} {affected:?} ({}) is linked through {dependent}, {remedy}",
                    advised.name, advised.advisory
                ));
            }
        }
        let Some(decision_page) = &advised.decision else {
            continue;
        };
        let decision = read(decision_page);
        for must in std::iter::once(&advised.advisory)
            .chain(std::iter::once(&advised.name))
            .chain(&advised.allowed_dependents)
        {
            if !decision.contains(must.as_str()) {
                problems.push(format!("{decision_page} does not mention {must:?}"));
            }
        }
    }
    problems
}

#[test]
fn advised_crates_are_linked_only_through_their_documented_paths() {
    let lock: Lock = toml::from_str(&read("Cargo.lock")).expect("Cargo.lock parses");
    let list = advised_list();
    assert!(
        list.crates.iter().any(|c| c.name == "rsa"),
        "the list starts with `rsa`"
    );
    let problems = check(&lock, &list);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        !dependents(&lock, "rsa", &versions(&lock, "rsa")).contains("sf2520"),
        "sf2520 must not depend on the `rsa` crate itself"
    );
}

/// The check catches the failure it exists for: a lock file in which our own crate
/// (or anything not documented) pulls in `rsa`.
#[test]
fn an_undocumented_path_to_an_advised_crate_fails() {
    let lock = lock_of(&[
        ("rsa", "0.9.6", &[]),
        ("sf2520", "0.1.0", &["rsa 0.9.6", "russh"]),
        ("russh", "0.65.1", &["rsa"]),
    ]);
    let list = advised_list();
    let problems = check(&lock, &list);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("through sf2520"), "{problems:?}");
}

/// A lock file of `(name, version, dependencies)`.
fn lock_of(packages: &[(&str, &str, &[&str])]) -> Lock {
    let package = packages
        .iter()
        .map(|(name, version, dependencies)| Package {
            name: name.to_string(),
            version: version.to_string(),
            dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
        })
        .collect();
    Lock { package }
}

/// A lock file in which `postgres` links the given versions of tokio-postgres and
/// postgres-protocol.
fn postgres_lock(tokio_postgres: &str, protocol: &str) -> Lock {
    lock_of(&[
        ("postgres", "0.19.14", &["tokio-postgres"]),
        ("tokio-postgres", tokio_postgres, &["postgres-protocol"]),
        ("postgres-protocol", protocol, &[]),
    ])
}

/// An advisory with a fix binds the versions below it only, in semver order.
#[test]
fn a_fixed_advisory_allows_the_fixed_version_and_later_only() {
    let list = advised_list();
    for (tokio_postgres, protocol) in [
        ("0.7.18", "0.6.12"),
        ("0.7.19", "0.6.13"),
        ("0.10.0", "1.0.0"),
        ("0.7.18+build.5", "0.6.12"),
    ] {
        let problems = check(&postgres_lock(tokio_postgres, protocol), &list);
        assert!(
            problems.is_empty(),
            "{tokio_postgres} {protocol}: {problems:?}"
        );
    }

    let problems = check(&postgres_lock("0.7.17", "0.6.12"), &list);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("tokio-postgres")
            && problems[0].contains("RUSTSEC-2026-0178")
            && problems[0].contains("through postgres")
            && problems[0].contains("0.7.18 or later"),
        "{problems:?}"
    );

    let problems = check(&postgres_lock("0.7.18", "0.6.11"), &list);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("RUSTSEC-2026-0180") && problems[0].contains("through tokio-postgres"),
        "{problems:?}"
    );

    // A release candidate of the fixed version is not the fix; 0.7.9 is below 0.7.18.
    for early in ["0.7.18-rc.1", "0.7.9", "0.6.99"] {
        let problems = check(&postgres_lock(early, "0.6.12"), &list);
        assert_eq!(problems.len(), 1, "{early}: {problems:?}");
    }
}

/// With two versions of a crate in the tree, only the dependents of the affected
/// one are held to the advisory.
#[test]
fn only_the_dependents_of_an_affected_version_count() {
    let list = advised_list();
    let lock = lock_of(&[
        ("postgres", "0.19.14", &["tokio-postgres 0.7.18"]),
        ("old-client", "1.0.0", &["tokio-postgres 0.7.10"]),
        ("tokio-postgres", "0.7.18", &[]),
        ("tokio-postgres", "0.7.10", &[]),
    ]);
    let problems = check(&lock, &list);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("through old-client"), "{problems:?}");
    assert!(problems[0].contains(r#"["0.7.10"]"#), "{problems:?}");
}

/// An entry must say either how far the advisory reaches or why it is safe.
#[test]
fn an_entry_without_fix_or_decision_fails() {
    let list: AdvisedList = toml::from_str(
        r#"
[[crate]]
name = "tokio-postgres"
advisory = "RUSTSEC-2026-0178"
"#,
    )
    .unwrap();
    let problems = check(&postgres_lock("0.7.18", "0.6.12"), &list);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("neither"), "{problems:?}");
}
