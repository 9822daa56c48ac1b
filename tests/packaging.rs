//! The Debian package: `scripts/build-deb.sh` builds it with cargo-deb from
//! Cargo.toml's `[package.metadata.deb]`; its contents (a stripped binary,
//! md5sums, copyright, changelog, manual pages, completions), control fields,
//! maintainer scripts and systemd units are checked, the units by
//! `systemd-analyze verify` and `systemd-analyze security`, and the monitor's
//! unit and sudo rule by running what they run.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
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

/// Builds the package around the test build's binary (the dev profile, so no
/// release build: cargo-deb strips it), gzip-compressed for speed; returns its
/// path. scripts/install-test-deps.sh installs the pinned cargo-deb.
fn build_package(out: &Path) -> PathBuf {
    let cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    assert!(
        cargo_deb.is_ok_and(|output| output.status.success()),
        "cargo-deb is not installed: run scripts/install-test-deps.sh"
    );
    let printed = run(Command::new(root().join("scripts/build-deb.sh"))
        .args(["--profile", "dev", "--no-build", "--fast", "--out"])
        .arg(out));
    PathBuf::from(printed.trim())
}

const UNITS: [&str; 10] = [
    "sf2520-export.service",
    "sf2520-export.timer",
    "sf2520-inbox.path",
    "sf2520-inbox.service",
    "sf2520-inbox.timer",
    "sf2520-monitor.service",
    "sf2520-monitor.timer",
    "sf2520-status@.service",
    "sf2520-verify.service",
    "sf2520-verify.timer",
];

const SERVICES: [&str; 5] = [
    "sf2520-export.service",
    "sf2520-inbox.service",
    "sf2520-monitor.service",
    "sf2520-status@.service",
    "sf2520-verify.service",
];

/// The package, built once, extracted: the data under `root/`, the control
/// files under `control/`.
struct Package {
    dir: tempfile::TempDir,
    deb: PathBuf,
}

impl Package {
    fn build() -> Package {
        let dir = tempfile::tempdir().unwrap();
        let deb = build_package(&dir.path().join("out"));
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.path().join("root")));
        run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(dir.path().join("control")));
        Package { dir, deb }
    }

    fn file(&self, path: &str) -> PathBuf {
        self.dir.path().join("root").join(path)
    }

    fn read(&self, path: &str) -> String {
        let file = self.file(path);
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    }

    /// A gzipped file's text (manual pages, the changelog).
    fn gunzip(&self, path: &str) -> String {
        run(Command::new("gzip").arg("-dc").arg(self.file(path)))
    }

    fn control(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join("control").join(name))
            .unwrap_or_else(|e| panic!("control file {name}: {e}"))
    }
}

#[test]
fn the_package_holds_the_binary_units_config_docs_and_service_user() {
    let package = Package::build();
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&package.deb));
    let mut expected: Vec<String> = [
        "./usr/bin/sf2520",
        "./etc/sf2520/sf2520.toml",
        "./usr/lib/sysusers.d/sf2520.conf",
        "./usr/lib/tmpfiles.d/sf2520.conf",
        "./usr/share/doc/sf2520/operations.md",
        "./usr/share/doc/sf2520/copyright",
        "./usr/share/doc/sf2520/changelog.Debian.gz",
        "./usr/share/doc/sf2520/examples/postgresql-network.conf",
        "./usr/share/doc/sf2520/examples/key-credential.conf",
        "./usr/share/doc/sf2520/examples/sudoers-sf2520-nagios",
        "./usr/share/man/man1/sf2520.1.gz",
        "./usr/share/bash-completion/completions/sf2520",
        "./usr/share/zsh/vendor-completions/_sf2520",
        "./usr/share/fish/vendor_completions.d/sf2520.fish",
    ]
    .map(str::to_owned)
    .to_vec();
    expected.extend(
        UNITS
            .iter()
            .map(|unit| format!("./usr/lib/systemd/system/{unit}")),
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
    // Owned by root (cargo-deb writes uid/gid 0 without names).
    assert!(
        listing
            .lines()
            .all(|line| line.contains(" 0/0 ") || line.contains(" root/root ")),
        "{listing}"
    );
    let control = package.control("control");
    for field in ["Package: sf2520", "Version: 0.1.0-1", "Section: admin"] {
        assert!(control.lines().any(|l| l == field), "{field}: {control}");
    }
    // Depends is computed from the binary (dpkg-shlibdeps), not written by hand.
    let depends = control
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends: {control}"));
    assert!(depends.contains("libc6 (>= 2."), "{depends}");
    assert!(depends.contains("adduser"), "{depends}");
    assert_eq!(package.control("conffiles"), "/etc/sf2520/sf2520.toml\n");
    let sysusers = package.read("usr/lib/sysusers.d/sf2520.conf");
    assert!(sysusers.contains("u sf2520 - "), "{sysusers}");
    let tmpfiles = package.read("usr/lib/tmpfiles.d/sf2520.conf");
    assert!(
        tmpfiles.contains("d /var/lib/sf2520 0700 sf2520 sf2520"),
        "{tmpfiles}"
    );
    let packaged = run(Command::new(package.file("usr/bin/sf2520")).arg("--version"));
    assert_eq!(packaged.trim(), "sf2520 0.1.0");
    the_binary_is_stripped(&package);
    the_md5sums_cover_every_file(&package);
    the_copyright_changelog_man_pages_and_completions_are_there(&package);
    the_maintainer_scripts_carry_cargo_debs_unit_snippets(&package);
}

/// Regression: the package shipped the release binary with its debug info
/// (`debug = 1`): 91 MB.
fn the_binary_is_stripped(package: &Package) {
    let sections = run(Command::new("readelf")
        .args(["--section-headers", "--wide"])
        .arg(package.file("usr/bin/sf2520")));
    for section in [".debug_info", ".debug_line", ".symtab"] {
        assert!(
            !sections.contains(section),
            "the packaged binary has {section}"
        );
    }
    let packaged = fs::metadata(package.file("usr/bin/sf2520")).unwrap().len();
    let built = fs::metadata(env!("CARGO_BIN_EXE_sf2520")).unwrap().len();
    assert!(packaged < built / 2, "{packaged} bytes of {built}");
}

/// `DEBIAN/md5sums` names every regular file of the package with its MD5, as
/// `dpkg --verify` and debsums read it.
fn the_md5sums_cover_every_file(package: &Package) {
    let md5sums = package.control("md5sums");
    let listed: Vec<&str> = md5sums
        .lines()
        .map(|line| line.split_once("  ").unwrap_or_else(|| panic!("{line}")).1)
        .collect();
    for path in [
        "usr/bin/sf2520",
        "usr/lib/systemd/system/sf2520-export.service",
    ] {
        assert!(listed.contains(&path), "{path} not in md5sums:\n{md5sums}");
    }
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&package.deb));
    let files = listing.lines().filter(|line| line.starts_with('-')).count();
    assert_eq!(listed.len(), files, "{md5sums}\n{listing}");
    run(Command::new("md5sum")
        .args(["--check", "--quiet"])
        .arg(package.dir.path().join("control/md5sums"))
        .current_dir(package.dir.path().join("root")));
}

fn the_copyright_changelog_man_pages_and_completions_are_there(package: &Package) {
    let copyright = package.read("usr/share/doc/sf2520/copyright");
    assert!(copyright.contains("License: MIT"), "{copyright}");
    let changelog = package.gunzip("usr/share/doc/sf2520/changelog.Debian.gz");
    assert!(changelog.starts_with("sf2520 (0.1.0-1) "), "{changelog}");
    // The manual pages come from the clap definitions: one per subcommand, with
    // its options, and the exit codes in the main page.
    let main_page = package.gunzip("usr/share/man/man1/sf2520.1.gz");
    assert!(main_page.contains(".TH sf2520 1"), "{main_page}");
    assert!(main_page.contains("configuration"), "{main_page}");
    assert!(main_page.contains("Exit codes:"), "{main_page}");
    for subcommand in [
        "init", "ingest", "export", "deliver", "status", "verify", "metrics",
    ] {
        let page = package.gunzip(&format!("usr/share/man/man1/sf2520-{subcommand}.1.gz"));
        assert!(
            page.contains(&format!(".TH sf2520-{subcommand} 1")),
            "{page}"
        );
    }
    let status_page = package.gunzip("usr/share/man/man1/sf2520-status.1.gz");
    assert!(status_page.contains("warn\\-hours"), "{status_page}");
    assert!(
        !listing_has(package, "sf2520-generate"),
        "the hidden generate command got a page"
    );
    let bash = package.read("usr/share/bash-completion/completions/sf2520");
    assert!(bash.contains("complete -F _sf2520"), "{bash}");
    assert!(bash.contains("--warn-hours"), "bash: status's options");
    let zsh = package.read("usr/share/zsh/vendor-completions/_sf2520");
    assert!(zsh.starts_with("#compdef sf2520"), "{zsh}");
    let fish = package.read("usr/share/fish/vendor_completions.d/sf2520.fish");
    assert!(fish.contains("complete -c sf2520"), "{fish}");
    assert!(
        !fish.contains("-a \"generate\"") && !bash.contains("sf2520__generate"),
        "the hidden generate command is completed"
    );
}

fn listing_has(package: &Package, fragment: &str) -> bool {
    run(Command::new("dpkg-deb").arg("--contents").arg(&package.deb)).contains(fragment)
}

/// cargo-deb fills `#DEBHELPER#`: the units are known to deb-systemd-helper
/// (so purging forgets their state) but never enabled, started or restarted by
/// the package: an export started by apt would be a surprise.
fn the_maintainer_scripts_carry_cargo_debs_unit_snippets(package: &Package) {
    let postinst = package.control("postinst");
    assert!(
        postinst.contains("sf2520 --data-dir /var/lib/sf2520 init"),
        "{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper update-state sf2520-export.timer"),
        "{postinst}"
    );
    assert!(
        postinst.contains("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} sf2520.conf"),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let text = package.control(script);
        assert!(!text.contains("#DEBHELPER#"), "{script}: {text}");
        assert!(
            !text.contains("deb-systemd-invoke start"),
            "{script}: {text}"
        );
        assert!(
            !text.contains("deb-systemd-invoke restart"),
            "{script}: {text}"
        );
        run(Command::new("sh")
            .arg("-n")
            .arg(package.dir.path().join("control").join(script)));
    }
    let postrm = package.control("postrm");
    assert!(postrm.contains("deb-systemd-helper purge"), "{postrm}");
}

/// Every service: the same hardening, fit for both backends; what each may
/// write and reach is its own.
#[test]
fn the_units_are_hardened_and_hook_the_monitoring_check() {
    let units = root().join("packaging/systemd");
    for service in SERVICES {
        let text = fs::read_to_string(units.join(service)).unwrap();
        for line in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "UMask=0077",
            "User=sf2520",
            "EnvironmentFile=-/etc/default/sf2520",
            "SystemCallFilter=@system-service",
            "SystemCallFilter=~@privileged @resources",
            "SystemCallArchitectures=native",
            "RestrictNamespaces=yes",
            "ProtectClock=yes",
            "ProtectKernelLogs=yes",
            "ProtectHostname=yes",
            "LockPersonality=yes",
            "MemoryDenyWriteExecute=yes",
            "RestrictRealtime=yes",
            "CapabilityBoundingSet=",
        ] {
            assert!(text.lines().any(|l| l == line), "{service} lacks {line}");
        }
    }
    // Without the network: the units that never deliver; the drop-in opens it
    // for a PostgreSQL ledger on another host.
    for service in [
        "sf2520-inbox.service",
        "sf2520-status@.service",
        "sf2520-monitor.service",
    ] {
        let text = fs::read_to_string(units.join(service)).unwrap();
        assert!(text.contains("\nPrivateNetwork=yes\n"), "{service}");
        assert!(text.contains("postgresql-network.conf"), "{service}");
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

fn have_systemd_analyze() -> bool {
    let present = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !present {
        // scripts/install-test-deps.sh installs systemd; a machine without it
        // still checks the package's contents above.
        eprintln!("systemd-analyze is not installed; scripts/install-test-deps.sh installs it");
    }
    present
}

/// The units, with ExecStart= pointed at the test's binary, in `dir`, and each
/// drop-in of packaging/examples installed for the services it is meant for.
fn units_in(dir: &Path) -> Vec<PathBuf> {
    let binary = env!("CARGO_BIN_EXE_sf2520");
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = fs::read_to_string(root().join("packaging/systemd").join(unit))
            .unwrap()
            .replace("/usr/bin/sf2520", binary);
        let path = dir.join(unit);
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    for (dropin, services) in [
        (
            "postgresql-network.conf",
            &[
                "sf2520-inbox.service",
                "sf2520-status@.service",
                "sf2520-monitor.service",
            ][..],
        ),
        ("key-credential.conf", &SERVICES[..]),
    ] {
        for service in services {
            let into = dir.join(format!("{service}.d"));
            fs::create_dir_all(&into).unwrap();
            fs::copy(
                root().join("packaging/examples").join(dropin),
                into.join(dropin),
            )
            .unwrap();
        }
    }
    paths
}

/// `systemd-analyze verify` on the packaged units and the drop-ins (it reads
/// `UNIT.d/*.conf` beside them; verify checks that ExecStart= is executable).
/// Its warnings (an unknown key, a missing unit) fail the test too.
#[test]
fn systemd_analyze_verifies_the_units_and_the_dropins() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = units_in(dir.path());
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

/// `systemd-analyze security` scores what a unit leaves open (0 safe … 10
/// exposed). Before the system-call filter, namespaces, clock, kernel logs and
/// personality were closed, the export scored 4.5 and the inbox 3.8.
#[test]
fn systemd_analyze_security_finds_little_left_open() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    units_in(dir.path());
    for service in SERVICES {
        // --threshold is in tenths: 15 fails anything above 1.5.
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager", "--threshold=15"])
            .arg(dir.path().join(service))
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let verdict = stdout.lines().last().unwrap_or_default();
        assert!(output.status.success(), "{service}: {verdict}\n{stdout}");
    }
}

/// The monitor's unit runs `status --check` and `metrics` into /run/sf2520 as
/// files others may read: run its ExecStart= lines (pointed at a temporary
/// directory) and read the results as `nobody`, who cannot read the ledger.
#[test]
fn the_monitor_unit_writes_a_status_and_metrics_a_monitoring_user_may_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let runtime = dir.path().join("run");
    fs::create_dir(&runtime).unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o755)).unwrap();
    support::cli::sf2520(&data, ["init"]).expect_success("init");
    let unit = fs::read_to_string(root().join("packaging/systemd/sf2520-monitor.service")).unwrap();
    assert!(unit.contains("RuntimeDirectoryMode=0755"), "{unit}");
    let commands: Vec<String> = unit
        .lines()
        .filter_map(|line| line.strip_prefix("ExecStart=/bin/sh -c '"))
        .map(|line| {
            line.trim_end_matches('\'')
                .replace("/usr/bin/sf2520", env!("CARGO_BIN_EXE_sf2520"))
                .replace("/run/sf2520", &runtime.to_string_lossy())
        })
        .collect();
    assert_eq!(commands.len(), 2, "{unit}");
    for command in &commands {
        run(Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("SF2520_DATA_DIR", &data)
            .env_remove("SF2520_CONFIG")
            .env("RUST_LOG", "warn")
            .current_dir(dir.path()));
    }
    for file in ["status", "sf2520.prom"] {
        let path = runtime.join(file);
        assert_eq!(support::cli::mode(&path), 0o644, "{file}");
    }
    let status = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(runtime.join("status")));
    assert!(status.starts_with("SF2520 OK - "), "{status}");
    assert_eq!(status.lines().count(), 1, "{status}");
    let metrics = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(runtime.join("sf2520.prom")));
    assert!(
        metrics.contains("sf2520_ledger_head_position 0"),
        "{metrics}"
    );
    // Nothing half-written stays behind.
    let left: Vec<_> = fs::read_dir(&runtime)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

/// The sudo rule for NRPE parses, and allows exactly the command line its
/// comment gives NRPE (so the two cannot drift apart).
#[test]
fn the_sudo_rule_for_nrpe_parses_and_names_the_documented_command() {
    let rule = root().join("packaging/examples/sudoers-sf2520-nagios");
    let text = fs::read_to_string(&rule).unwrap();
    let nrpe = text
        .lines()
        .find_map(|line| line.strip_prefix("#   command[check_sf2520]=/usr/bin/sudo -n -u sf2520 "))
        .unwrap_or_else(|| panic!("no NRPE line: {text}"));
    let allowed = text
        .lines()
        .find_map(|line| line.strip_prefix("Cmnd_Alias SF2520_CHECK = "))
        .unwrap_or_else(|| panic!("no Cmnd_Alias: {text}"));
    assert_eq!(nrpe, allowed);
    assert!(allowed.ends_with(" status --check"), "{allowed}");
    assert!(text.contains("nagios ALL = (sf2520) NOPASSWD: SF2520_CHECK"));
    // scripts/install-test-deps.sh installs sudo (for visudo).
    run(Command::new("visudo").arg("-cf").arg(&rule));
}
