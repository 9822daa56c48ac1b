//! Whole-system fault simulation, seeded and reproducible from its seed.
//!
//! A random interleaving of ingest batches (valid, invalid, duplicate, conflicting),
//! corrections, batch exports (sometimes two at once), deliveries to a real sshd
//! with the platform stand-in (including rejected receipts, and sshd stopped and
//! restarted), reissues, runs under a clock stepped by hours either way
//! (`faketime`), runs on a data directory whose disk is full (a tmpfs filled to a
//! random few KiB), and SIGKILL of the `sf2520` process at random moments. After
//! every step it checks the ledger's invariants.
//!
//! The data directory lives on a tmpfs the test mounts, so it runs as root (as CI
//! does).
//!
//! It counts every fault where it injects it, and the failed runs they cause, and
//! fails unless each kind happened: a run too short for that (`SF2520_SIM_STEPS=5`)
//! fails rather than passing having proved nothing.
//!
//! CI runs two seeds of 250 steps. A longer run:
//! `SF2520_SIM_SEEDS=1,2,3,4 SF2520_SIM_STEPS=2500 cargo test --release --test simulation -- --nocapture`

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use sf2520::demo::{random_cpr, SplitMix64};
use sf2520::export::outbox::{OUTBOX_MARKER, QUARANTINE_DIR};
use sf2520::export::{default_outbox, reconstruct};
use sf2520::ledger::DeliveryState;
use sf2520::ledger::Ledger;
use support::export::{assert_files_follow_on, read_checked};
use support::platform::{Answer, Platform};
use support::sshd::Sshd;
use support::tmpfs::Tmpfs;

const KOMMUNER: [&str; 6] = ["0101", "0147", "0751", "0461", "0851", "0825"];
const AGREEMENTS_PER_KOMMUNE: usize = 4;

/// The figures a run reports: each fault injected, counted where it is injected,
/// and the failed runs the faults caused. A run whose faults did not happen
/// proves nothing, so every one of them must be above zero (see `assert_each_happened`).
#[derive(Default, Debug)]
struct Figures {
    steps: u64,
    /// `sf2520` processes SIGKILLed while still running.
    kills: u64,
    /// Two exports started at once.
    overlaps: u64,
    /// Runs under a clock stepped away from the real one.
    clock_steps: u64,
    /// Runs on a full disk.
    disk_full: u64,
    /// Batches with a bad line, refused.
    invalid_batches: u64,
    /// Acknowledged batches sent again with other content, refused as conflicts.
    conflicting_batches: u64,
    /// Times sshd was killed (and later restarted).
    sshd_stops: u64,
    /// Runs on a full disk that failed (and had to change nothing).
    full_disk_failures: u64,
    /// Deliveries (`deliver`, `export --deliver`, `reissue`) that failed: sshd
    /// down or a killed run's leftovers (judged by the invariants).
    delivery_failures: u64,
    /// Files the platform rejected (every fifth løbenummer of Aarhus), at the end.
    rejected_files: u64,
    invariant_checks: u64,
}

impl Figures {
    /// Every fault injected, of whatever kind.
    fn faults(&self) -> u64 {
        self.kills
            + self.clock_steps
            + self.disk_full
            + self.invalid_batches
            + self.conflicting_batches
            + self.sshd_stops
    }

    /// Runs that failed because of a fault, which the invariants then judged.
    fn failures(&self) -> u64 {
        self.full_disk_failures + self.delivery_failures
    }

    /// Every figure, named, in the order they are printed and checked.
    fn named(&self) -> [(&'static str, u64); 12] {
        [
            ("kills", self.kills),
            ("overlapping_exports", self.overlaps),
            ("clock_steps", self.clock_steps),
            ("disk_full", self.disk_full),
            ("invalid_batches", self.invalid_batches),
            ("conflicting_batches", self.conflicting_batches),
            ("sshd_stops", self.sshd_stops),
            ("full_disk_failures", self.full_disk_failures),
            ("delivery_failures", self.delivery_failures),
            ("rejected_files", self.rejected_files),
            ("faults", self.faults()),
            ("failures", self.failures()),
        ]
    }

    fn add(&mut self, other: &Figures) {
        self.steps += other.steps;
        self.kills += other.kills;
        self.overlaps += other.overlaps;
        self.clock_steps += other.clock_steps;
        self.disk_full += other.disk_full;
        self.invalid_batches += other.invalid_batches;
        self.conflicting_batches += other.conflicting_batches;
        self.sshd_stops += other.sshd_stops;
        self.full_disk_failures += other.full_disk_failures;
        self.delivery_failures += other.delivery_failures;
        self.rejected_files += other.rejected_files;
        self.invariant_checks += other.invariant_checks;
    }

    fn summary(&self) -> String {
        let named: Vec<String> = self
            .named()
            .iter()
            .map(|(name, count)| format!("{name}={count}"))
            .collect();
        format!(
            "steps={} {} invariant_checks={}",
            self.steps,
            named.join(" "),
            self.invariant_checks
        )
    }

    /// Each kind of fault, and each kind of failure it causes, happened; and the
    /// invariants were checked after every step.
    fn assert_each_happened(&self) {
        for (what, count) in self.named() {
            assert!(
                count > 0,
                "the simulation saw no {what}: {}",
                self.summary()
            );
        }
        assert!(
            self.invariant_checks > self.steps,
            "the invariants were not checked after every step: {}",
            self.summary()
        );
    }
}

/// The exit status of a run refused because another export holds the lock.
const EXIT_TRY_AGAIN: i32 = 5;

struct World {
    rng: SplitMix64,
    /// The data directory's disk; declared before `dir`, so unmounted first.
    disk: Tmpfs,
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    /// The clock offset of the next run (`faketime -f`), if any.
    clock: Option<String>,
    config: PathBuf,
    sshd: Sshd,
    platform: Platform,
    sshd_up: bool,
    /// (agreement, kommune, cpr) registered at the start.
    agreements: Vec<(String, String, String)>,
    /// Batches acknowledged by `ingest` (exit 0 and its "appended" line): their text.
    acknowledged: Vec<String>,
    /// Entry references (kommune, reference) of acknowledged batches.
    acknowledged_refs: Vec<(u16, String)>,
    /// (position, hash) of heads seen after acknowledged writes: never to change.
    witnessed: Vec<(u64, [u8; 32])>,
    /// Official files already checked with `check` and `reconstruct`.
    checked_files: HashSet<(u16, u32)>,
    next_reference: u64,
    figures: Figures,
}

impl World {
    fn new(seed: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let disk = Tmpfs::mount(&dir.path().join("disk"), "256m");
        let data_dir = disk.path().join("data");
        let sshd = Sshd::start();
        // The platform rejects every fifth løbenummer of Aarhus: rejected receipts happen.
        let platform = Platform::start(&sshd.root(), |name| {
            let rejected = name.starts_with("SF2520_0751_") && name.ends_with("5.txt");
            if rejected {
                Answer::Reject {
                    code: 7001,
                    code_description: "Afvist i test".into(),
                    description: "Løbenummer slutter på 5".into(),
                }
            } else {
                Answer::Success
            }
        });
        let config = sshd.write_sf2520_config(
            dir.path(),
            "connect_timeout_secs = 3\nreceipt_timeout_secs = 4\nconcurrency = 3\n\
             [sftp.retry]\nmax_attempts = 2\ninitial_delay_ms = 50\nmax_delay_ms = 200\n",
        );
        let mut world = World {
            rng: SplitMix64::new(seed),
            disk,
            dir,
            data_dir,
            clock: None,
            config,
            sshd,
            platform,
            sshd_up: true,
            agreements: Vec::new(),
            acknowledged: Vec::new(),
            acknowledged_refs: Vec::new(),
            witnessed: Vec::new(),
            checked_files: HashSet::new(),
            next_reference: 0,
            figures: Figures::default(),
        };
        world.register_agreements();
        world
    }

    fn register_agreements(&mut self) {
        let mut lines = Vec::new();
        for kommune in KOMMUNER {
            for index in 0..AGREEMENTS_PER_KOMMUNE {
                let agreement = format!("BA{kommune}{index}");
                let cpr = random_cpr(&mut self.rng).digits().to_string();
                lines.push(json!({"type": "agreement", "agreement": agreement, "kommune": kommune, "cpr": cpr, "valid_from": "2026-01-01"}).to_string());
                self.agreements.push((agreement, kommune.to_string(), cpr));
            }
        }
        let (ok, out) = self.run_to_end(&["init"]);
        assert!(ok, "init failed: {out}");
        let (ok, out) = self.run_to_end(&["ingest", &self.write_batch(&lines)]);
        assert!(ok, "setup ingest failed: {out}");
    }

    fn sf2520(&self, args: &[&str]) -> Command {
        let mut command = match &self.clock {
            Some(offset) => {
                let mut command = Command::new("faketime");
                command
                    .args(["-f", offset])
                    .arg(env!("CARGO_BIN_EXE_sf2520"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_sf2520")),
        };
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .args(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    fn run_to_end(&self, args: &[&str]) -> (bool, String) {
        let output = self.sf2520(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked"),
            "sf2520 {args:?} panicked: {stderr}"
        );
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// Runs a command and, with probability `kill_percent`, SIGKILLs it after a
    /// random delay. Returns `None` when it was killed, else (success, stdout).
    fn run_maybe_killed(
        &mut self,
        args: &[&str],
        kill_percent: u64,
        delay_ms_max: u64,
    ) -> Option<(bool, String)> {
        let mut child: Child = self.sf2520(args).spawn().unwrap();
        if self.rng.chance(kill_percent) {
            std::thread::sleep(Duration::from_millis(self.rng.below(delay_ms_max)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                self.figures.kills += 1;
                return None;
            }
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked"),
            "sf2520 {args:?} panicked: {stderr}"
        );
        Some((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ))
    }

    fn write_batch(&self, lines: &[String]) -> String {
        let path = self
            .dir
            .path()
            .join(format!("batch-{}.jsonl", self.next_reference));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path.display().to_string()
    }

    fn withholding_line(&mut self) -> (String, (u16, String)) {
        let index = usize::try_from(self.rng.below(self.agreements.len() as u64)).unwrap();
        let (agreement, kommune, cpr) = self.agreements[index].clone();
        self.next_reference += 1;
        let reference = format!("KY-{}", self.next_reference);
        let amount = format!("{}.{:02}", 100 + self.rng.below(2000), self.rng.below(100));
        let line = json!({"type": "withholding", "reference": reference, "agreement": agreement, "kommune": kommune,
            "cpr": cpr, "payout_date": "2026-10-01", "period_from": "2026-09-01", "period_to": "2026-09-30", "amount": amount});
        (line.to_string(), (kommune.parse().unwrap(), reference))
    }

    /// A correction of -1.00 of some withholding whose net the ledger says allows it.
    fn correction_line(&mut self) -> Option<(String, (u16, String))> {
        let ledger = Ledger::open(&self.data_dir).unwrap();
        let candidates: Vec<(u16, String)> = rusqlite::Connection::open(ledger.dir().join(sf2520::ledger::DATABASE_FILE)).unwrap()
            .prepare("SELECT kommune, reference FROM entries WHERE kind = 1 AND net_ore >= 10000 ORDER BY position")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (kommune, corrects) =
            candidates[usize::try_from(self.rng.below(candidates.len() as u64)).unwrap()].clone();
        self.next_reference += 1;
        let reference = format!("KO-{}", self.next_reference);
        let line = json!({"type": "correction", "reference": reference, "corrects": corrects, "kommune": format!("{kommune:04}"), "amount": "-1.00", "reason": "sim"});
        Some((line.to_string(), (kommune, reference)))
    }

    fn step(&mut self) {
        self.figures.steps += 1;
        match self.rng.below(100) {
            0..=34 => self.ingest_valid(),
            35..=39 => self.ingest_invalid(),
            40..=44 => self.ingest_duplicate_or_conflict(),
            45..=64 => self.export(),
            65..=80 => self.deliver(),
            81..=85 => self.reissue(),
            86..=89 => self.overlapping_exports(),
            90..=93 => self.with_stepped_clock(),
            94..=96 => self.on_a_full_disk(),
            _ => self.toggle_sshd(),
        }
        self.check_invariants();
    }

    /// Two exports at once (all kommuner and one kommune), either killed at random:
    /// each finishes, or is refused because the other holds the export lock.
    fn overlapping_exports(&mut self) {
        self.figures.overlaps += 1;
        let kommune = KOMMUNER[usize::try_from(self.rng.below(6)).unwrap()];
        let lock_wait = if self.rng.chance(50) { "0" } else { "30" };
        let children: Vec<Child> = [
            vec!["export", "--lock-wait", lock_wait],
            vec!["export", "--kommune", kommune, "--lock-wait", lock_wait],
        ]
        .iter()
        .map(|args| self.sf2520(args).spawn().unwrap())
        .collect();
        if self.rng.chance(30) {
            std::thread::sleep(Duration::from_millis(self.rng.below(600)));
        }
        for mut child in children {
            if self.rng.chance(20) && child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                self.figures.kills += 1;
                continue;
            }
            let output = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!stderr.contains("panicked"), "{stderr}");
            let code = output.status.code();
            assert!(
                code == Some(0)
                    || (code == Some(EXIT_TRY_AGAIN)
                        && stderr.contains("another export is running")),
                "an overlapping export ended {code:?}: {stderr}"
            );
        }
    }

    /// The next operation under a clock up to 36 hours off, either way.
    fn with_stepped_clock(&mut self) {
        self.figures.clock_steps += 1;
        let hours = 1 + self.rng.below(36);
        let sign = if self.rng.chance(50) { "+" } else { "-" };
        self.clock = Some(format!("{sign}{hours}h"));
        if self.rng.chance(50) {
            self.ingest_valid();
        } else {
            self.export();
        }
        self.clock = None;
    }

    /// An ingest or export with the data directory's disk filled to a random few
    /// KiB: it either succeeds or fails changing nothing (judged by the invariants:
    /// an acknowledged batch is present, no unrecorded file is published).
    fn on_a_full_disk(&mut self) {
        self.figures.disk_full += 1;
        let head_before = self.head();
        let leave = self.rng.below(256 * 1024);
        if self.rng.chance(50) {
            let (line, reference) = self.withholding_line();
            let batch = self.write_batch(std::slice::from_ref(&line));
            let filler = self.disk.fill(leave);
            let (ok, out) = self.run_to_end(&["ingest", &batch]);
            std::fs::remove_file(filler).unwrap();
            if ok {
                assert!(out.contains("appended"), "{out}");
                self.acknowledged.push(line + "\n");
                self.acknowledged_refs.push(reference);
            } else {
                self.figures.full_disk_failures += 1;
                assert_eq!(self.head(), head_before, "a failed ingest changed the log");
            }
        } else {
            let filler = self.disk.fill(leave);
            let (ok, _) = self.run_to_end(&["export"]);
            std::fs::remove_file(filler).unwrap();
            if !ok {
                self.figures.full_disk_failures += 1;
            }
        }
    }

    fn ingest_valid(&mut self) {
        let mut lines = Vec::new();
        let mut refs = Vec::new();
        for _ in 0..1 + self.rng.below(8) {
            let entry = if self.rng.chance(25) {
                self.correction_line()
            } else {
                None
            };
            let (line, reference) = entry.unwrap_or_else(|| self.withholding_line());
            lines.push(line);
            refs.push(reference);
        }
        let batch = self.write_batch(&lines);
        let head_before = self.head();
        match self.run_maybe_killed(&["ingest", &batch], 35, 60) {
            None => {}
            Some((ok, out)) => {
                assert!(
                    ok && out.contains("appended"),
                    "a valid batch was refused: {out}"
                );
                self.acknowledged.push(lines.join("\n") + "\n");
                self.acknowledged_refs.extend(refs);
                let head = self.head();
                assert!(head.0 > head_before.0);
                self.witnessed.push(head);
            }
        }
    }

    fn ingest_invalid(&mut self) {
        self.figures.invalid_batches += 1;
        let (good, _) = self.withholding_line();
        let bad = match self.rng.below(4) {
            0 => good.replace("\"amount\":\"", "\"amount\":\"1.001"),
            1 => good.replace("\"kommune\":\"", "\"kommune\":\"x"),
            2 => "{\"type\":\"withholding\",".to_string(),
            _ => good.replace("2026-09-30", "2026-02-30"),
        };
        let (other, _) = self.withholding_line();
        let batch = self.write_batch(&[other, bad]);
        let head_before = self.head();
        let (ok, out) = self.run_to_end(&["ingest", &batch]);
        assert!(
            !ok && out.contains(":2: "),
            "a bad batch must be refused at line 2: {out}"
        );
        assert_eq!(self.head(), head_before, "a refused batch changed the log");
    }

    fn ingest_duplicate_or_conflict(&mut self) {
        if self.acknowledged.is_empty() {
            return self.ingest_valid();
        }
        let index = usize::try_from(self.rng.below(self.acknowledged.len() as u64)).unwrap();
        let batch = self.acknowledged[index].clone();
        let head_before = self.head();
        if self.rng.chance(50) {
            let path = self.write_batch(&[batch.trim_end().to_string()]);
            let (ok, out) = self.run_to_end(&["ingest", &path]);
            assert!(
                ok && out.contains("appended 0 event(s)"),
                "a re-sent batch must be all duplicates: {out}"
            );
        } else {
            self.figures.conflicting_batches += 1;
            // The first amount with a 9 put in front of its digits: same reference,
            // other content.
            let conflicting = batch
                .replacen("\"amount\":\"-", "\"amount\":\"-9", 1)
                .replacen("\"amount\":\"1", "\"amount\":\"91", 1);
            let conflicting = if conflicting == batch {
                batch.replacen("\"amount\":\"", "\"amount\":\"9", 1)
            } else {
                conflicting
            };
            let path = self.write_batch(&[conflicting.trim_end().to_string()]);
            let (ok, out) = self.run_to_end(&["ingest", &path]);
            assert!(
                !ok && out.contains("conflict"),
                "a changed re-send must conflict: {out}"
            );
        }
        assert_eq!(self.head(), head_before);
    }

    fn export(&mut self) {
        let deliver = self.sshd_up && self.rng.chance(30);
        let args: &[&str] = if deliver {
            &["export", "--deliver"]
        } else {
            &["export"]
        };
        // The outcome of a delivery that follows is judged by the invariants.
        if let Some((ok, out)) = self.run_maybe_killed(args, 40, 1_300) {
            assert!(ok || deliver, "export failed: {out}");
            if !ok {
                self.figures.delivery_failures += 1;
            }
        }
    }

    fn deliver(&mut self) {
        // A failed delivery (sshd down, rejected receipts) is judged by the invariants.
        if let Some((false, _)) = self.run_maybe_killed(&["deliver"], 35, 400) {
            self.figures.delivery_failures += 1;
        }
    }

    fn reissue(&mut self) {
        let ledger = Ledger::open(&self.data_dir).unwrap();
        let files = ledger.official_files(None).unwrap();
        drop(ledger);
        if files.is_empty() {
            return self.export();
        }
        let file = &files[usize::try_from(self.rng.below(files.len() as u64)).unwrap()];
        let (kommune, sequence) = (file.kommune.code(), file.sequence.to_string());
        let reissued = self.run_maybe_killed(
            &["reissue", "--kommune", &kommune, "--seq", &sequence],
            15,
            300,
        );
        if let Some((false, _)) = reissued {
            self.figures.delivery_failures += 1;
        }
    }

    fn toggle_sshd(&mut self) {
        if self.sshd_up {
            self.sshd.stop();
            self.figures.sshd_stops += 1;
        } else {
            self.sshd.restart();
        }
        self.sshd_up = !self.sshd_up;
    }

    fn head(&self) -> (u64, [u8; 32]) {
        let head = Ledger::open(&self.data_dir).unwrap().head().unwrap();
        (head.position, head.hash)
    }

    fn check_invariants(&mut self) {
        let ledger = Ledger::open(&self.data_dir).unwrap();
        self.check_nothing_acknowledged_lost(&ledger);
        let verified = ledger.verify(|_| {}).unwrap();
        assert!(
            verified.is_ok(),
            "projections differ from a replay or the chain broke: {verified:?}"
        );
        self.figures.invariant_checks += 1;
        self.check_files(&ledger);
        self.check_deliveries(&ledger);
    }

    fn check_nothing_acknowledged_lost(&mut self, ledger: &Ledger) {
        let present: HashSet<(u16, String)> =
            rusqlite::Connection::open(ledger.dir().join(sf2520::ledger::DATABASE_FILE))
                .unwrap()
                .prepare("SELECT kommune, reference FROM entries")
                .unwrap()
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        for reference in &self.acknowledged_refs {
            assert!(
                present.contains(reference),
                "acknowledged entry {reference:?} is gone"
            );
        }
        for (position, hash) in &self.witnessed {
            assert_eq!(
                &ledger.event_at(*position).unwrap().hash,
                hash,
                "history changed at {position}"
            );
        }
        self.figures.invariant_checks += 2;
    }

    /// Løbenumre gapless, ranges contiguous, every entry up to a kommune's last
    /// cut-off in exactly one file, every new file passing check and reconstruct.
    fn check_files(&mut self, ledger: &Ledger) {
        let outbox = default_outbox(&self.data_dir);
        for (kommune, files) in &assert_files_follow_on(ledger) {
            let previous_cutoff = files.last().map_or(0, |file| file.cutoff_position);
            let mut records = 0;
            for file in files {
                records += file.record_count;
                if self.checked_files.insert((*kommune, file.sequence)) {
                    let parsed = read_checked(&outbox.join(&file.file_name));
                    assert_eq!(parsed.end.record_count, file.record_count);
                    let rebuilt = reconstruct(ledger, file.kommune, file.sequence).unwrap();
                    assert!(rebuilt.matches(), "{} does not reconstruct", file.file_name);
                    self.figures.invariant_checks += 2;
                }
            }
            let entries: u64 =
                rusqlite::Connection::open(ledger.dir().join(sf2520::ledger::DATABASE_FILE))
                    .unwrap()
                    .query_row(
                        "SELECT COUNT(*) FROM entries WHERE kommune = ?1 AND position <= ?2",
                        rusqlite::params![kommune, i64::try_from(previous_cutoff).unwrap()],
                        |row| row.get(0),
                    )
                    .unwrap();
            assert_eq!(
                records, entries,
                "kommune {kommune}: entries up to the last cut-off must be in exactly one file"
            );
            self.figures.invariant_checks += 1;
        }
    }

    /// The platform picked up each delivery (SendersFileId) at most once, and every
    /// file the ledger holds as accepted was picked up under its accepted id.
    fn check_deliveries(&mut self, ledger: &Ledger) {
        let mut pickups: HashMap<String, usize> = HashMap::new();
        for seen in self.platform.seen() {
            *pickups.entry(seen.senders_file_id.clone()).or_default() += 1;
        }
        let twice: Vec<_> = pickups.iter().filter(|(_, &n)| n > 1).collect();
        assert!(
            twice.is_empty(),
            "a delivery was picked up more than once: {twice:?}"
        );
        for file in ledger.official_files(None).unwrap() {
            let status = ledger
                .delivery_status(file.kommune, file.sequence, file.file_id)
                .unwrap();
            if status.state == DeliveryState::Accepted {
                let id = uuid::Uuid::from_bytes(status.senders_file_id).to_string();
                assert_eq!(
                    pickups.get(&id),
                    Some(&1),
                    "{} accepted but not picked up once",
                    file.file_name
                );
            }
        }
        self.figures.invariant_checks += 1;
    }

    /// Brings everything home: sshd up, export and deliver until nothing is pending.
    fn finish(&mut self) {
        if !self.sshd_up {
            self.toggle_sshd();
        }
        let (ok, out) = self.run_to_end(&["export"]);
        assert!(ok, "final export: {out}");
        let _ = self.run_to_end(&["deliver"]);
        self.check_invariants();
        let ledger = Ledger::open(&self.data_dir).unwrap();
        let entries: i64 =
            rusqlite::Connection::open(ledger.dir().join(sf2520::ledger::DATABASE_FILE))
                .unwrap()
                .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
                .unwrap();
        let exported: i64 =
            rusqlite::Connection::open(ledger.dir().join(sf2520::ledger::DATABASE_FILE))
                .unwrap()
                .query_row(
                    "SELECT COALESCE(SUM(record_count), 0) FROM files",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
        assert_eq!(
            entries, exported,
            "after the final export every entry is in a file"
        );
        for file in ledger.official_files(None).unwrap() {
            let state = ledger
                .delivery_status(file.kommune, file.sequence, file.file_id)
                .unwrap()
                .state;
            let rejected_by_design = matches!(state, DeliveryState::Rejected { .. });
            if rejected_by_design {
                self.figures.rejected_files += 1;
            }
            assert!(
                state == DeliveryState::Accepted || rejected_by_design,
                "{} ends {state:?}",
                file.file_name
            );
        }
        let outbox: Vec<String> = std::fs::read_dir(default_outbox(&self.data_dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let official: HashSet<String> = ledger
            .official_files(None)
            .unwrap()
            .into_iter()
            .map(|f| f.event.file_name)
            .collect();
        let ours = |name: &String| name == OUTBOX_MARKER || name == QUARANTINE_DIR;
        assert!(
            outbox
                .iter()
                .all(|name| ours(name) || official.contains(name)),
            "unrecorded files left: {outbox:?}"
        );
    }
}

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(name)
        .ok()
        .map(|text| {
            text.split(',')
                .map(|s| s.trim().parse().expect("a number"))
                .collect()
        })
        .unwrap_or_else(|| default.to_vec())
}

#[test]
fn the_invariants_hold_under_random_faults() {
    let seeds = env_list("SF2520_SIM_SEEDS", &[1, 2]);
    let steps = env_list("SF2520_SIM_STEPS", &[250])[0];
    let mut total = Figures::default();
    for seed in seeds {
        let mut world = World::new(seed);
        for _ in 0..steps {
            world.step();
        }
        world.finish();
        println!("simulation seed {seed}: {}", world.figures.summary());
        total.add(&world.figures);
    }
    println!("simulation total: {}", total.summary());
    total.assert_each_happened();
}
