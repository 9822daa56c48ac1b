//! The Debian package: `scripts/build-deb.sh` builds it from Cargo.toml's
//! `[package.metadata.deb]`; its contents, control fields and systemd units are
//! checked, the units by `systemd-analyze verify` where systemd is installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds the package around the test build's binary; returns its path.
fn build_package(out: &Path) -> PathBuf {
    let printed = run(Command::new(root().join("scripts/build-deb.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_sf2520"))
        .arg("--out")
        .arg(out)
        .arg("--fast"));
    PathBuf::from(printed.trim())
}

const UNITS: [&str; 8] = [
    "sf2520-export.service",
    "sf2520-export.timer",
    "sf2520-inbox.path",
    "sf2520-inbox.service",
    "sf2520-inbox.timer",
    "sf2520-status@.service",
    "sf2520-verify.service",
    "sf2520-verify.timer",
];

#[test]
fn the_package_holds_the_binary_units_config_and_service_user() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let mut expected = vec![
        "./usr/bin/sf2520".to_owned(),
        "./etc/sf2520/sf2520.toml".to_owned(),
        "./usr/lib/sysusers.d/sf2520.conf".to_owned(),
        "./usr/lib/tmpfiles.d/sf2520.conf".to_owned(),
        "./usr/share/doc/sf2520/operations.md".to_owned(),
    ];
    expected.extend(
        UNITS
            .iter()
            .map(|unit| format!("./lib/systemd/system/{unit}")),
    );
    for path in &expected {
        assert!(
            listing.lines().any(|line| line.ends_with(path.as_str())),
            "{path} missing from the package:\n{listing}"
        );
    }
    let config_line = listing
        .lines()
        .find(|l| l.ends_with("sf2520.toml"))
        .unwrap();
    assert!(config_line.starts_with("-rw-------"), "{config_line}");
    assert!(
        listing.lines().all(|line| line.contains(" root/root ")),
        "{listing}"
    );
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for field in [
        "Package: sf2520",
        "Version: 0.1.0",
        "Depends: libc6",
        "postinst",
    ] {
        assert!(info.contains(field), "{field}: {info}");
    }
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/sf2520/sf2520.toml\n");
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("sf2520 --data-dir /var/lib/sf2520 init"),
        "{postinst}"
    );
    let extracted = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted));
    let sysusers = fs::read_to_string(extracted.join("usr/lib/sysusers.d/sf2520.conf")).unwrap();
    assert!(sysusers.contains("u sf2520 - "), "{sysusers}");
    let tmpfiles = fs::read_to_string(extracted.join("usr/lib/tmpfiles.d/sf2520.conf")).unwrap();
    assert!(
        tmpfiles.contains("d /var/lib/sf2520 0700 sf2520 sf2520"),
        "{tmpfiles}"
    );
    let packaged = run(Command::new(extracted.join("usr/bin/sf2520")).arg("--version"));
    assert_eq!(packaged.trim(), "sf2520 0.1.0");
}

#[test]
fn the_units_are_hardened_and_hook_the_monitoring_check() {
    let units = root().join("packaging/systemd");
    for service in [
        "sf2520-export.service",
        "sf2520-inbox.service",
        "sf2520-status@.service",
        "sf2520-verify.service",
    ] {
        let text = fs::read_to_string(units.join(service)).unwrap();
        for line in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "UMask=0077",
            "User=sf2520",
        ] {
            assert!(text.lines().any(|l| l == line), "{service} lacks {line}");
        }
    }
    for service in [
        "sf2520-export.service",
        "sf2520-inbox.service",
        "sf2520-verify.service",
    ] {
        let text = fs::read_to_string(units.join(service)).unwrap();
        assert!(
            text.contains("OnFailure=sf2520-status@%n.service"),
            "{service}"
        );
    }
    let status = fs::read_to_string(units.join("sf2520-status@.service")).unwrap();
    assert!(status.contains("ExecStart=/usr/bin/sf2520 status --check"));
    let verify = fs::read_to_string(units.join("sf2520-verify.service")).unwrap();
    assert!(verify.contains("ExecStart=/usr/bin/sf2520 verify"));
    let weekly = fs::read_to_string(units.join("sf2520-verify.timer")).unwrap();
    assert!(weekly.contains("OnCalendar=Sun "), "{weekly}");
    let path = fs::read_to_string(units.join("sf2520-inbox.path")).unwrap();
    assert!(path.contains("PathExistsGlob=/var/spool/sf2520/inbox/*.jsonl"));
}

/// `systemd-analyze verify` on the packaged units, with ExecStart= pointed at
/// the extracted binary (verify checks that it is executable). Its warnings
/// (an unknown key, a missing unit) fail the test too.
#[test]
fn systemd_analyze_verifies_the_units() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        // scripts/install-test-deps.sh installs systemd; a machine without it
        // still checks the package's contents above.
        eprintln!("systemd-analyze is not installed; scripts/install-test-deps.sh installs it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_sf2520");
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = fs::read_to_string(root().join("packaging/systemd").join(unit))
            .unwrap()
            .replace("/usr/bin/sf2520", binary);
        let path = dir.path().join(unit);
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&paths)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
}
