//! SFTP delivery against a real OpenSSH server and a Serviceplatformen stand-in.
//!
//! Needs /usr/sbin/sshd and ssh-keygen: `scripts/install-test-deps.sh` installs them.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::Duration;

use sf2520::transport::keys::ClientKey;
use sf2520::transport::{
    self, await_receipt, trigger_for, trigger_xml, upload, DeliveryOutcome, OutgoingFile,
    RetryConfig, RoutingConfig, SftpClient, SftpConfig, TransportError,
};
use sha2::{Digest, Sha256};
use support::platform::{receipt_xml, validate_against_schema, Answer, Platform};
use support::sshd::{self, Sshd, SshdSetup};
use support::transfer::{deliver_all, deliver_file};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

/// How long a test waits for a failed attempt before it fails.
const ATTEMPT_WAIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Tells of every attempt the retry loop gives up on (its `attempt N of M failed,
/// retrying` warning), in the futures it is attached to, so that a test can act
/// once an attempt has failed rather than after a guessed pause.
struct FailedAttempts(mpsc::Sender<()>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for FailedAttempts {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let metadata = event.metadata();
        if metadata.target() == "sf2520::transport::retry"
            && *metadata.level() == tracing::Level::WARN
        {
            // The receiver is gone only when the test no longer waits.
            let _ = self.0.send(());
        }
    }
}

/// Runs `future` on the runtime, telling the returned receiver of each failed
/// attempt inside it.
fn spawn_watched<F>(future: F) -> (tokio::task::JoinHandle<F::Output>, mpsc::Receiver<()>)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (sender, failures) = mpsc::channel();
    let subscriber = tracing_subscriber::registry().with(FailedAttempts(sender));
    (tokio::spawn(future.with_subscriber(subscriber)), failures)
}

/// Blocks until an attempt watched by `failures` has failed; panics naming `what`
/// after [`ATTEMPT_WAIT_TIMEOUT`], or when the watched task ended first.
fn wait_for_a_failed_attempt(failures: &mpsc::Receiver<()>, what: &str, sshd: &Sshd) {
    let why = match failures.recv_timeout(ATTEMPT_WAIT_TIMEOUT) {
        Ok(()) => return,
        Err(mpsc::RecvTimeoutError::Timeout) => format!("none did within {ATTEMPT_WAIT_TIMEOUT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => "it ended without one".to_owned(),
    };
    panic!(
        "waited for {what} to fail an attempt, and {why}; sshd's log:\n{}",
        sshd.log()
    );
}

/// Deterministic bytes that do not repeat on a short period, so a misplaced chunk
/// changes the digest.
fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn outgoing(kommune: &str, sequence: u32, len: usize) -> OutgoingFile {
    OutgoingFile {
        name: format!("SF2520_{kommune}_20260201_{sequence:06}.txt"),
        bytes: file_bytes(
            len,
            u64::from(sequence) * 7919 + u64::try_from(len).unwrap(),
        ),
        senders_file_id: Uuid::new_v4(),
    }
}

/// The outcome of the receipt for a delivery, with no receipts recorded before.
async fn await_outcome(
    config: &SftpConfig,
    name: &str,
    senders_file_id: Uuid,
) -> Result<DeliveryOutcome, TransportError> {
    await_receipt(config, name, senders_file_id, &Default::default())
        .await
        .map(|received| received.outcome())
}

fn accept_all(_name: &str) -> Answer {
    Answer::Success
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Given a config loaded from a TOML file that pins the host key by fingerprint,
/// when a file is delivered, then the platform accepts it and holds the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_bytes_equal_the_local_bytes() {
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), accept_all);
    let config = load_config_from_toml(&sshd);
    let file = outgoing("0751", 1, 300_000);

    let outcome = deliver_file(&config, &file)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));

    let seen = platform.seen();
    assert_eq!(seen.len(), 1);
    let expected_uuid = seen[0].file_transfer_uuid.clone().unwrap();
    assert_eq!(
        outcome,
        DeliveryOutcome::Accepted {
            file_transfer_uuid: expected_uuid
        }
    );
    assert_eq!(
        sha256(&platform.picked_up(&file.name).unwrap()),
        sha256(&file.bytes)
    );
    assert_eq!(seen[0].data_sha256, Some(sha256(&file.bytes)));
    assert_eq!(seen[0].senders_file_id, file.senders_file_id.to_string());
    assert_eq!(seen[0].sender, "KY-TEST");
    assert_eq!(seen[0].recipients, ["UDK-DEBITOR", "UDK-TEST"]);
}

/// Writes a private config file next to the server's keys and loads it the way the
/// exporter will.
fn load_config_from_toml(sshd: &Sshd) -> SftpConfig {
    let path = sshd.dir().join("sf2520.toml");
    let text = format!(
        "[sftp]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\n\
         private_key = \"client_ed25519\"\nhost_key = \"{fingerprint}\"\n\
         sender = \"KY-TEST\"\nrecipients = [\"UDK-DEBITOR\", \"UDK-TEST\"]\n\
         connect_timeout_secs = 5\nreceipt_timeout_secs = 10\nreceipt_poll_interval_ms = 50\n",
        port = sshd.port(),
        user = sshd.user(),
        fingerprint = sshd.host_key_fingerprint(),
    );
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    transport::load(&path).unwrap().expect("has [sftp]")
}

/// Given a data file large enough to take many SFTP writes, when it is uploaded,
/// then the stand-in found it complete at the moment the trigger appeared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_appears_only_after_the_whole_data_file() {
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), accept_all);
    let config = sshd.config();
    let file = outgoing("0101", 2, 3 * 1024 * 1024 + 17);

    let uploaded = upload(&config, &file)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    let outcome = await_outcome(&config, &file.name, file.senders_file_id)
        .await
        .unwrap();

    assert_eq!(uploaded.remote_path, format!("OUT/{}", file.name));
    assert_eq!(uploaded.trigger_path, format!("OUT/{}.trigger", file.name));
    assert_eq!(
        uploaded.size_bytes,
        u64::try_from(file.bytes.len()).unwrap()
    );
    assert_eq!(uploaded.attempt, 1);
    assert!(
        matches!(outcome, DeliveryOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    let seen = platform.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].data_was_complete(), "{:?}", seen[0]);
    assert_eq!(seen[0].declared_size, Some(uploaded.size_bytes));
    assert_eq!(seen[0].file_name, file.name);
}

/// Given a pinned key that is not the server's, when we upload, then the connection
/// is refused before anything is written, and the error shows both fingerprints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pinned_host_key_is_refused_before_any_upload() {
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), accept_all);
    let impostor = sshd::generate_key(sshd.dir(), "impostor_ed25519");
    let impostor_pub = impostor.with_extension("pub");
    let mut config = sshd.config();
    config.host_key = fs::read_to_string(&impostor_pub).unwrap().parse().unwrap();

    let error = upload(&config, &outgoing("0751", 3, 1_000))
        .await
        .unwrap_err();

    let offered = sshd.host_key_fingerprint();
    let expected = sshd::fingerprint(&impostor_pub);
    match &error {
        TransportError::HostKeyMismatch {
            offered: o,
            expected: e,
            ..
        } => {
            assert_eq!(
                (o, e),
                (
                    &format!("{offered} (ssh-ed25519)"),
                    &format!("{expected} (ssh-ed25519)")
                )
            );
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&offered) && message.contains(&expected),
        "{message}"
    );
    assert!(!error.is_retryable());
    assert!(names_in(&sshd.out_dir()).is_empty());
    assert!(platform.seen().is_empty());
}

/// Given a platform that rejects files for kommune 0101, when one is delivered, then
/// the outcome carries the platform's error code and texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_receipt_carries_the_platform_error_code() {
    let sshd = Sshd::start();
    let _platform = Platform::start(&sshd.root(), |name| {
        if name.contains("_0101_") {
            Answer::Reject {
                code: 4711,
                code_description: "Unknown recipient".into(),
                description: "Recipient UDK-DEBITOR does not accept this file type".into(),
            }
        } else {
            Answer::Success
        }
    });
    let config = sshd.config();

    let outcome = deliver_file(&config, &outgoing("0101", 4, 500))
        .await
        .unwrap();

    let DeliveryOutcome::Rejected {
        file_transfer_uuid,
        errors,
    } = outcome
    else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert!(!file_transfer_uuid.is_empty());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code, 4711);
    assert_eq!(errors[0].code_description, "Unknown recipient");
    assert_eq!(
        errors[0].description,
        "Recipient UDK-DEBITOR does not accept this file type"
    );
}

/// Given sshd is down, when an upload starts and sshd comes back during the backoff,
/// then a later attempt succeeds and the attempt number says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_while_sshd_is_down_succeeds_after_restart() {
    let mut sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), accept_all);
    let mut config = sshd.config();
    config.retry = RetryConfig {
        max_attempts: 20,
        initial_delay_ms: 100,
        max_delay_ms: 300,
    };
    let file = outgoing("0751", 5, 10_000);
    sshd.stop();

    let (task, failures) = {
        let (config, file) = (config.clone(), file.clone());
        spawn_watched(async move { upload(&config, &file).await })
    };
    wait_for_a_failed_attempt(&failures, "the upload while sshd is down", &sshd);
    sshd.restart();
    let uploaded = task
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    let outcome = await_outcome(&config, &file.name, file.senders_file_id)
        .await
        .unwrap();

    assert!(
        uploaded.attempt > 1,
        "sshd was down, yet attempt {}",
        uploaded.attempt
    );
    assert!(
        matches!(outcome, DeliveryOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        platform.picked_up(&file.name).as_deref(),
        Some(&file.bytes[..])
    );
}

/// Given we are waiting for a receipt, when the server crashes and comes back, then
/// the watch reconnects and still gets the receipt within the same deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_while_waiting_for_the_receipt_is_reestablished() {
    let mut sshd = Sshd::start();
    let mut config = sshd.config();
    config.retry = RetryConfig {
        max_attempts: 20,
        initial_delay_ms: 100,
        max_delay_ms: 300,
    };
    let file = outgoing("0751", 9, 1_000);
    upload(&config, &file).await.unwrap();

    let (task, failures) = {
        let (config, file) = (config.clone(), file.clone());
        spawn_watched(async move { await_outcome(&config, &file.name, file.senders_file_id).await })
    };
    // One login for the upload, then the watch's: the crash must find it connected.
    sshd.wait_for_log("Accepted publickey", 2, "the receipt watch's login");
    sshd.stop();
    wait_for_a_failed_attempt(&failures, "the receipt watch after the crash", &sshd);
    sshd.restart();
    let platform = Platform::start(&sshd.root(), accept_all);
    let outcome = task
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));

    assert!(
        matches!(outcome, DeliveryOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    assert_eq!(platform.seen().len(), 1);
    // One login for the upload, one for the first watch, at least one after the
    // crash: the receipt was written only after it.
    sshd.wait_for_log(
        "Accepted publickey",
        3,
        "the receipt watch's login after the crash",
    );
}

/// Given sshd stays down, when we upload, then retrying stops at max_attempts with
/// the connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_gives_up_after_max_attempts() {
    let mut sshd = Sshd::start();
    let mut config = sshd.config();
    config.retry = RetryConfig {
        max_attempts: 3,
        initial_delay_ms: 10,
        max_delay_ms: 20,
    };
    sshd.stop();

    let error = upload(&config, &outgoing("0751", 6, 10)).await.unwrap_err();

    match error {
        TransportError::RetriesExhausted { attempts, last } => {
            assert_eq!(attempts, 3);
            assert!(matches!(*last, TransportError::Connect { .. }), "{last:?}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

/// Given several kommuner's files, when they are delivered with concurrency 3, then
/// each arrives whole and is accepted, and results come back in input order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_files_are_delivered_concurrently() {
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), accept_all);
    let mut config = sshd.config();
    config.concurrency = 3;
    let files: Vec<OutgoingFile> = ["0101", "0147", "0751", "0461", "0851", "0561"]
        .iter()
        .zip(1..)
        .map(|(kommune, sequence)| {
            outgoing(
                kommune,
                sequence,
                50_000 + 1_000 * usize::try_from(sequence).unwrap(),
            )
        })
        .collect();

    let results = deliver_all(&config, &files).await;

    let seen = platform.seen();
    assert_eq!(seen.len(), files.len());
    for (file, result) in files.iter().zip(results) {
        let outcome = result.unwrap_or_else(|e| panic!("{}: {e}\n{}", file.name, sshd.log()));
        let record = seen
            .iter()
            .find(|s| s.name == file.name)
            .expect("platform saw the file");
        assert_eq!(
            outcome,
            DeliveryOutcome::Accepted {
                file_transfer_uuid: record.file_transfer_uuid.clone().unwrap()
            }
        );
        assert!(record.data_was_complete());
        assert_eq!(record.data_sha256, Some(sha256(&file.bytes)));
    }
}

/// Given a platform that never answers, and a receipt in IN/ from an earlier delivery
/// of the same name, when we wait, then we time out and name the stale receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_receipt_within_the_timeout_is_reported_and_stale_receipts_are_ignored() {
    let sshd = Sshd::start();
    let _platform = Platform::start(&sshd.root(), |_| Answer::Silent);
    let mut config = sshd.config();
    config.receipt_timeout_secs = 1;
    let file = outgoing("0751", 7, 100);
    let earlier = Uuid::new_v4();
    let stale = receipt_xml("old-transfer", &earlier.to_string(), &Answer::Success);
    fs::write(
        sshd.in_dir().join(format!("{}.sftpreceipt", file.name)),
        stale,
    )
    .unwrap();

    upload(&config, &file).await.unwrap();
    let error = await_outcome(&config, &file.name, file.senders_file_id)
        .await
        .unwrap_err();

    match error {
        TransportError::ReceiptTimeout {
            waited_secs,
            expected_senders_file_id,
            stale_senders_file_id,
            ..
        } => {
            assert_eq!(waited_secs, 1);
            assert_eq!(expected_senders_file_id, file.senders_file_id.to_string());
            assert_eq!(stale_senders_file_id, Some(earlier.to_string()));
        }
        other => panic!("expected ReceiptTimeout, got {other:?}"),
    }
}

/// Given what an interrupted upload of this delivery left (its staged data file
/// half written; or the whole data file under its name, no trigger; or, from an
/// older sf2520 that wrote straight to the name, the first bytes of it), when the
/// file is uploaded again, then the upload is finished and the platform gets the
/// whole file, with no staged file left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_is_finished() {
    let sshd = Sshd::start();
    let config = sshd.config();
    let out = sshd.out_dir();
    let staged = outgoing("0751", 8, 20_000);
    fs::write(
        out.join(format!(
            "{}.{}.partial",
            staged.name, staged.senders_file_id
        )),
        &staged.bytes[..5_000],
    )
    .unwrap();
    let whole = outgoing("0101", 8, 20_000);
    fs::write(out.join(&whole.name), &whole.bytes).unwrap();
    let prefix = outgoing("0147", 8, 20_000);
    fs::write(out.join(&prefix.name), &prefix.bytes[..5_000]).unwrap();

    for file in [&staged, &whole, &prefix] {
        let uploaded = upload(&config, file).await.unwrap();
        assert_eq!(uploaded.size_bytes, 20_000);
        assert_eq!(fs::read(out.join(&file.name)).unwrap(), file.bytes);
        let trigger = fs::read_to_string(out.join(format!("{}.trigger", file.name))).unwrap();
        assert!(
            trigger.contains(&file.senders_file_id.to_string()),
            "{trigger}"
        );
    }
    assert_eq!(names_in(&out).len(), 6, "{:?}", names_in(&out));
    let platform = Platform::start(&sshd.root(), accept_all);
    for file in [&staged, &whole, &prefix] {
        let outcome = await_outcome(&config, &file.name, file.senders_file_id)
            .await
            .unwrap();
        assert!(matches!(outcome, DeliveryOutcome::Accepted { .. }));
    }
    assert!(platform.seen().iter().all(|seen| seen.data_was_complete()));
}

/// Regression (issue 22, item 3): an upload started over and overwrote whatever
/// the name held. Now other bytes under the name, or a trigger of another
/// delivery, refuse the upload (not retried), and what is there stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_never_replaces_what_another_delivery_left() {
    let sshd = Sshd::start();
    let config = sshd.config();
    let out = sshd.out_dir();
    let file = outgoing("0751", 3, 2_000);
    let theirs = file_bytes(2_000, 99);
    fs::write(out.join(&file.name), &theirs).unwrap();

    let error = upload(&config, &file).await.unwrap_err();

    assert!(error.is_name_taken() && !error.is_retryable(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("SHA-256 {}", hex(&sha256(&theirs)))),
        "{message}"
    );
    assert_eq!(fs::read(out.join(&file.name)).unwrap(), theirs);
    assert_eq!(
        names_in(&out),
        std::slice::from_ref(&file.name),
        "no trigger, nothing staged"
    );

    let other = outgoing("0101", 3, 2_000);
    let trigger = out.join(format!("{}.trigger", other.name));
    fs::write(&trigger, "<stale/>").unwrap();
    let error = upload(&config, &other).await.unwrap_err();
    assert!(error.is_name_taken(), "{error:?}");
    assert_eq!(fs::read_to_string(&trigger).unwrap(), "<stale/>");
    assert!(
        !out.join(&other.name).exists(),
        "no data file under a foreign trigger"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client's building blocks against the real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_client_operations_work_on_the_server() {
    let sshd = Sshd::start();
    let client = SftpClient::connect(&sshd.config())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));

    client.upload("OUT/a.txt", b"hello").await.unwrap();
    let mode = fs::metadata(sshd.out_dir().join("a.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "uploaded file has mode {mode:o}");
    assert_eq!(client.size("OUT/a.txt").await.unwrap(), 5);
    assert_eq!(client.read_at_most("OUT/a.txt", 5).await.unwrap(), b"hello");
    let over = client.read_at_most("OUT/a.txt", 4).await.unwrap_err();
    assert!(
        matches!(
            over,
            TransportError::TooLarge {
                size_bytes: Some(5),
                limit_bytes: 4,
                ..
            }
        ),
        "{over:?}"
    );
    // A 4 GiB receipt (sparse: no disk) is refused by its size, never read.
    let huge = fs::File::create(sshd.in_dir().join("huge.sftpreceipt")).unwrap();
    huge.set_len(4 << 30).unwrap();
    let refused = client
        .read_at_most("IN/huge.sftpreceipt", transport::RECEIPT_BYTES_MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, TransportError::TooLarge { size_bytes: Some(size), .. } if size == 4 << 30),
        "{refused:?}"
    );
    assert!(!refused.is_retryable());
    fs::remove_file(sshd.in_dir().join("huge.sftpreceipt")).unwrap();
    // Delivery relies on this: SFTP's rename never replaces an existing file.
    client.upload("OUT/b.txt", b"theirs").await.unwrap();
    let refused = client.rename("OUT/a.txt", "OUT/b.txt").await;
    assert!(refused.is_err(), "rename replaced an existing file");
    assert_eq!(fs::read(sshd.out_dir().join("b.txt")).unwrap(), b"theirs");
    client.remove("OUT/b.txt").await.unwrap();
    client.rename("OUT/a.txt", "OUT/b.txt").await.unwrap();
    assert!(!client.exists("OUT/a.txt").await.unwrap());
    assert!(client.exists("OUT/b.txt").await.unwrap());
    assert_eq!(client.list_dir("OUT").await.unwrap(), ["b.txt"]);
    client.remove("OUT/b.txt").await.unwrap();
    assert!(client.list_dir("OUT").await.unwrap().is_empty());
    let missing = client.upload("NO_SUCH_DIR/x", b"x").await.unwrap_err();
    assert!(
        matches!(missing, TransportError::Remote { .. }),
        "{missing:?}"
    );
    assert!(!missing.is_retryable());
    client.close().await;
    assert!(names_in(&sshd.out_dir()).is_empty());
}

fn routing(recipient_it_system: Option<&str>) -> RoutingConfig {
    RoutingConfig {
        inf_ref: "KY-SF2520".into(),
        sender_it_system: "6F1C8A53-2B4E-4D2A-9C1E-0A7B3C5D9E11".into(),
        sender_authority: "urn:oio:cvr-nr:29189846".into(),
        recipient_it_system: recipient_it_system.map(str::to_owned),
        recipient_authority: "urn:oio:cvr-nr:29980540".into(),
    }
}

/// Every shape of trigger the code can write validates against KOMBIT's
/// `SFTPTypes.xsd`: the empty `FileContentDescriptor`, dynamic routing with and
/// without the optional `RecipientIt-system`, several recipients, names of exactly
/// 255 characters and text that needs escaping. The trigger of before this change
/// (no `FileContentDescriptor`) is the control: the validator must refuse it.
#[test]
fn every_trigger_shape_validates_against_kombit_schema() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = Sshd::placeholder_config();
    let file = outgoing("0751", 1, 10);
    let now = chrono::DateTime::parse_from_rfc3339("2026-02-01T06:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut shapes = Vec::new();
    shapes.push(("empty FileContentDescriptor", config.clone()));
    config.routing = Some(routing(None));
    shapes.push(("routing without RecipientIt-system", config.clone()));
    config.routing = Some(routing(Some("0a7b3c5d-9e11-4d2a-9c1e-6f1c8a532b4e")));
    config.sender = "S".repeat(255);
    config.recipients = vec!["R".repeat(255), "UDK & <co>".into()];
    shapes.push((
        "routing with every field, 255-character names",
        config.clone(),
    ));
    for (what, config) in shapes {
        let trigger = trigger_for(&config, &file, 10, now).unwrap();
        let xml = trigger_xml(&trigger).unwrap();
        if let Err(complaint) = validate_against_schema(&xml, scratch.path()) {
            panic!("{what}: the trigger fails SFTPTypes.xsd:\n{complaint}\n{xml}");
        }
        if config.routing.is_some() {
            assert!(
                xml.contains(
                    "<SenderIt-system>6f1c8a53-2b4e-4d2a-9c1e-0a7b3c5d9e11</SenderIt-system>"
                ),
                "{xml}"
            );
            assert!(
                xml.contains(&format!(
                    "<TransactionId>{}</TransactionId>",
                    file.senders_file_id
                )),
                "{xml}"
            );
            assert!(
                xml.contains("<SenderTimestamp>2026-02-01T06:00:00Z</SenderTimestamp>"),
                "{xml}"
            );
        } else {
            assert!(xml.contains("<FileContentDescriptor/>"), "{xml}");
        }
    }
    let old_shape = trigger_xml(&trigger_for(&Sshd::placeholder_config(), &file, 10, now).unwrap())
        .unwrap()
        .replace("  <FileContentDescriptor/>\n", "");
    let complaint = validate_against_schema(&old_shape, scratch.path()).unwrap_err();
    assert!(
        complaint.contains("Missing child element(s). Expected is ( FileContentDescriptor )"),
        "{complaint}"
    );
    let too_long = old_shape.replace("KY-TEST", &"S".repeat(256));
    assert!(validate_against_schema(&too_long, scratch.path()).is_err());
}

/// A routed trigger delivered to the real server passes the stand-in's schema check
/// and is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_with_dynamic_routing_is_accepted_by_the_stand_in() {
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), accept_all);
    let mut config = sshd.config();
    config.routing = Some(routing(None));
    let file = outgoing("0751", 9, 1_000);
    let outcome = deliver_file(&config, &file).await.unwrap();
    assert!(
        matches!(outcome, DeliveryOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    let seen = platform.seen();
    assert_eq!(seen[0].schema_check, Ok(()));
    assert!(
        seen[0].trigger_text.contains("<SFTPDynamicRoutingInfo>"),
        "{}",
        seen[0].trigger_text
    );
}

fn args(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Logs in with the key at `key` and lists OUT/; panics with sshd's log on failure.
async fn log_in_with(sshd: &Sshd, key: std::path::PathBuf) -> SftpConfig {
    let mut config = sshd.config();
    config.private_key = key;
    let client = SftpClient::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert!(client.list_dir("OUT").await.unwrap().is_empty());
    client.close().await;
    config
}

/// RSA client keys of 3072 and 4096 bits in OpenSSH, PEM (PKCS#1) and PKCS#8
/// format, ECDSA and ed25519 keys all log in to the real OpenSSH server; an RSA key
/// delivers a file end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_ecdsa_and_ed25519_client_keys_log_in_and_rsa_delivers() {
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), accept_all);
    for (name, keygen, described) in [
        ("rsa3072_openssh", "-t rsa -b 3072", "ssh-rsa (3072 bits)"),
        (
            "rsa4096_pem",
            "-t rsa -b 4096 -m PEM",
            "ssh-rsa (4096 bits)",
        ),
        (
            "rsa3072_pkcs8",
            "-t rsa -b 3072 -m PKCS8",
            "ssh-rsa (3072 bits)",
        ),
        ("ecdsa256", "-t ecdsa -b 256", "ecdsa-sha2-nistp256"),
        ("ed25519", "-t ed25519", "ssh-ed25519"),
    ] {
        let key = sshd.add_client_key(
            name,
            &args(keygen).iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(
            ClientKey::load(&key).unwrap().describe(),
            described,
            "{name}"
        );
        let config = log_in_with(&sshd, key).await;
        if name == "rsa4096_pem" {
            let file = outgoing("0751", 10, 50_000);
            let outcome = deliver_file(&config, &file).await.unwrap();
            assert!(
                matches!(outcome, DeliveryOutcome::Accepted { .. }),
                "{outcome:?}"
            );
            assert_eq!(
                sha256(&platform.picked_up(&file.name).unwrap()),
                sha256(&file.bytes)
            );
        }
    }
    let log = sshd.log();
    assert!(
        log.contains("Accepted publickey") && log.contains(": RSA SHA256:"),
        "{log}"
    );
}

/// A server that accepts only rsa-sha2-256, or only rsa-sha2-512, still lets an RSA
/// key in: the client signs with the algorithm the server announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_sign_with_whichever_sha2_the_server_accepts() {
    for algorithm in ["rsa-sha2-256", "rsa-sha2-512"] {
        let sshd = Sshd::start_with(SshdSetup {
            pubkey_accepted_algorithms: Some(algorithm.into()),
            ..SshdSetup::default()
        });
        let key = sshd.add_client_key("rsa", &["-t", "rsa", "-b", "3072"]);
        log_in_with(&sshd, key).await;
        let ed25519 = SftpClient::connect(&sshd.config()).await;
        assert!(
            matches!(ed25519, Err(TransportError::AuthRejected { .. })),
            "{algorithm}: the server must really be limited to RSA"
        );
    }
}

/// An RSA host key can be pinned (by key line or fingerprint), and a wrong pin is
/// still refused before login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsa_host_key_is_pinned() {
    let sshd = Sshd::start_with(SshdSetup {
        host_key: args("-t rsa -b 3072"),
        ..SshdSetup::default()
    });
    assert!(
        sshd.host_key_line().starts_with("ssh-rsa "),
        "{}",
        sshd.host_key_line()
    );
    let mut config = sshd.config();
    for pin in [sshd.host_key_line(), sshd.host_key_fingerprint()] {
        config.host_key = pin.parse().unwrap();
        let client = SftpClient::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
        client.close().await;
    }
    let other = Sshd::start();
    config.host_key = other.host_key_line().parse().unwrap();
    let refused = SftpClient::connect(&config).await.err();
    assert!(
        matches!(&refused, Some(TransportError::HostKeyMismatch { offered, .. })
            if offered.starts_with(&format!("{} (ssh-rsa)", sshd.host_key_fingerprint()))
                && offered.ends_with("and no ssh-ed25519 key")),
        "{refused:?}"
    );
}

/// Regression: pinning the RSA (or ECDSA) line `ssh-keyscan` prints for a server
/// that also has an ed25519 key gave a false alarm ("server offered SHA256:…"):
/// the client asked for russh's default host-key algorithms, ed25519 first. Each
/// of the three keys of one server is pinned in turn, by its line and by its
/// fingerprint; a key of another server is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_key_of_a_server_with_rsa_ecdsa_and_ed25519_can_be_pinned() {
    let sshd = Sshd::start_with(SshdSetup {
        host_key: args("-t ed25519"),
        more_host_keys: vec![args("-t rsa -b 3072"), args("-t ecdsa -b 256")],
        ..SshdSetup::default()
    });
    let lines = sshd.host_key_lines();
    let types: Vec<&str> = lines
        .iter()
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(types, ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"]);
    let mut config = sshd.config();
    let scratch = tempfile::tempdir().unwrap();
    for (index, line) in lines.iter().enumerate() {
        let public = scratch.path().join(format!("key{index}.pub"));
        fs::write(&public, format!("{line}\n")).unwrap();
        for pin in [line.clone(), sshd::fingerprint(&public)] {
            config.host_key = pin.parse().unwrap();
            let client = SftpClient::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("pinned {pin}: {e}\n{}", sshd.log()));
            client.close().await;
        }
    }
    let other = Sshd::start_with(SshdSetup {
        host_key: args("-t rsa -b 3072"),
        ..SshdSetup::default()
    });
    config.host_key = other.host_key_line().parse().unwrap();
    let refused = SftpClient::connect(&config).await.err();
    assert!(
        matches!(&refused, Some(TransportError::HostKeyMismatch { .. })),
        "{refused:?}"
    );
}
