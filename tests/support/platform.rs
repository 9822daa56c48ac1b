//! A stand-in for Serviceplatformen: answers each trigger in `OUT/` with a receipt in `IN/`.
//!
//! Like the real platform it acts only on `*.trigger`. At that moment it validates the
//! trigger against KOMBIT's `SFTPTypes.xsd` (our copy in `tests/data/kombit/`) with a
//! real `xmllint --schema`, checks that the data file exists and has the size the
//! trigger declares, and logs what it saw,
//! so a test can prove the trigger never came before the whole data file. It then
//! "picks up" both files (the data file moves to `<root>/picked-up/`) and writes a
//! `TechnicalReceipt`: SUCCESS, or an error receipt when the data file was not
//! complete or the test's [`Answer`] says so. Its XML is written by hand here, not by
//! the code under test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub(crate) const NAMESPACE: &str = "http://serviceplatformen.dk/xml/wsdl/soap11/SFTP/1/types";

/// How the stand-in answers a complete, valid delivery.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    Success,
    Reject {
        code: i32,
        code_description: String,
        description: String,
    },
    /// SUCCESS, in a receipt that leaves out the optional SendersFileId.
    SuccessWithoutId,
    /// Errors, in a receipt that leaves out the optional SendersFileId.
    RejectWithoutId {
        codes: Vec<i32>,
    },
    /// Pick the files up but never write a receipt.
    Silent,
    /// A receipt of this many bytes (sparse: it takes no disk), as whoever
    /// controls `IN/` could write one.
    Oversized {
        size_bytes: u64,
    },
}

/// What the stand-in saw when a trigger appeared.
#[derive(Clone, Debug)]
pub(crate) struct TriggerSeen {
    pub name: String,
    /// `FileName` in the trigger.
    pub file_name: String,
    pub declared_size: Option<u64>,
    /// The data file's size when the trigger was found; `None` if it did not exist.
    pub data_size_at_trigger: Option<u64>,
    pub data_sha256: Option<[u8; 32]>,
    pub sender: String,
    pub senders_file_id: String,
    pub recipients: Vec<String>,
    /// The `FileTransferUUID` of the receipt written, if any.
    pub file_transfer_uuid: Option<String>,
    /// `xmllint --schema SFTPTypes.xsd` on the trigger: `Ok` or its complaint.
    pub schema_check: Result<(), String>,
    /// The trigger exactly as found.
    pub trigger_text: String,
}

/// KOMBIT's SFTP schema, as kept in this repository.
pub(crate) fn kombit_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kombit/SFTPTypes.xsd")
}

/// Validates `xml` against KOMBIT's `SFTPTypes.xsd` with `xmllint --schema`.
pub(crate) fn validate_against_schema(xml: &str, scratch: &Path) -> Result<(), String> {
    let path = scratch.join(format!("trigger-{}.xml", uuid::Uuid::new_v4()));
    fs::write(&path, xml).expect("write trigger for xmllint");
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(kombit_schema())
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run xmllint ({e}): run scripts/install-test-deps.sh"));
    let _ = fs::remove_file(&path);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl TriggerSeen {
    /// The data file was there, whole, when the trigger appeared.
    pub(crate) fn data_was_complete(&self) -> bool {
        self.data_size_at_trigger.is_some() && self.data_size_at_trigger == self.declared_size
    }
}

pub(crate) struct Platform {
    root: PathBuf,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<TriggerSeen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Platform {
    /// Starts watching `<root>/OUT`; `answer` decides the receipt per data file name.
    pub(crate) fn start(root: &Path, answer: impl Fn(&str) -> Answer + Send + 'static) -> Platform {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let watcher = Watcher {
            root: root.to_owned(),
            answer: Box::new(answer),
            log: Arc::clone(&log),
        };
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    watcher.scan();
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Platform {
            root: root.to_owned(),
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// Every trigger seen so far, in the order seen.
    pub(crate) fn seen(&self) -> Vec<TriggerSeen> {
        self.log.lock().expect("platform log").clone()
    }

    /// The bytes the platform picked up for `name`.
    pub(crate) fn picked_up(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.root.join("picked-up").join(name)).ok()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Watcher {
    root: PathBuf,
    answer: Box<dyn Fn(&str) -> Answer + Send>,
    log: Arc<Mutex<Vec<TriggerSeen>>>,
}

#[derive(Deserialize, Default)]
struct TriggerXml {
    #[serde(rename = "FileDescriptor")]
    file_descriptor: FileDescriptorXml,
}

#[derive(Deserialize, Default)]
struct FileDescriptorXml {
    #[serde(rename = "FileName", default)]
    file_name: String,
    #[serde(rename = "SizeInBytes")]
    size_in_bytes: Option<u64>,
    #[serde(rename = "Sender", default)]
    sender: String,
    #[serde(rename = "SendersFileId", default)]
    senders_file_id: String,
    #[serde(rename = "Recipients", default)]
    recipients: Vec<String>,
}

impl Watcher {
    fn scan(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("OUT")) else {
            return;
        };
        let mut triggers: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".trigger"))
            .collect();
        triggers.sort();
        for trigger in triggers {
            self.handle(trigger.trim_end_matches(".trigger"));
        }
    }

    fn scratch(&self) -> PathBuf {
        let dir = self.root.join("..").join("platform-scratch");
        fs::create_dir_all(&dir).expect("create platform scratch dir");
        dir
    }

    fn handle(&self, name: &str) {
        let out = self.root.join("OUT");
        let trigger_text =
            fs::read_to_string(out.join(format!("{name}.trigger"))).unwrap_or_default();
        let trigger: TriggerXml = quick_xml::de::from_str(&trigger_text).unwrap_or_default();
        let descriptor = trigger.file_descriptor;
        let data = fs::read(out.join(name)).ok();
        let mut seen = TriggerSeen {
            name: name.to_owned(),
            file_name: descriptor.file_name,
            declared_size: descriptor.size_in_bytes,
            data_size_at_trigger: data.as_ref().map(|d| u64::try_from(d.len()).unwrap()),
            data_sha256: data.as_ref().map(|d| Sha256::digest(d).into()),
            sender: descriptor.sender,
            senders_file_id: descriptor.senders_file_id,
            recipients: descriptor.recipients,
            file_transfer_uuid: None,
            schema_check: validate_against_schema(&trigger_text, &self.scratch()),
            trigger_text: trigger_text.clone(),
        };
        let answer = self.verdict(&seen);
        self.pick_up(name, data.as_deref());
        if let Answer::Oversized { size_bytes } = answer {
            self.write_sparse_receipt(name, size_bytes);
        } else if !matches!(answer, Answer::Silent) {
            let transfer = uuid::Uuid::new_v4().to_string();
            self.write_receipt(
                name,
                &receipt_xml(&transfer, &seen.senders_file_id, &answer),
            );
            seen.file_transfer_uuid = Some(transfer);
        }
        self.log.lock().expect("platform log").push(seen);
    }

    /// A trigger that does not describe a whole data file is rejected whatever the test asked.
    fn verdict(&self, seen: &TriggerSeen) -> Answer {
        let reject = |code: i32, description: String| Answer::Reject {
            code,
            code_description: "Invalid delivery".into(),
            description,
        };
        if let Err(complaint) = &seen.schema_check {
            return reject(9003, format!("trigger fails SFTPTypes.xsd: {complaint}"));
        }
        if seen.file_name != seen.name {
            return reject(
                9001,
                format!(
                    "FileName {:?} but trigger for {:?}",
                    seen.file_name, seen.name
                ),
            );
        }
        if !seen.data_was_complete() {
            return reject(
                9002,
                format!(
                    "declared {:?} bytes, found {:?}",
                    seen.declared_size, seen.data_size_at_trigger
                ),
            );
        }
        (self.answer)(&seen.name)
    }

    fn pick_up(&self, name: &str, data: Option<&[u8]>) {
        let out = self.root.join("OUT");
        let picked = self.root.join("picked-up");
        fs::create_dir_all(&picked).expect("create picked-up dir");
        if let Some(data) = data {
            fs::write(picked.join(name), data).expect("keep picked-up data");
            let _ = fs::remove_file(out.join(name));
        }
        let _ = fs::remove_file(out.join(format!("{name}.trigger")));
    }

    fn write_sparse_receipt(&self, name: &str, size_bytes: u64) {
        let inbox = self.root.join("IN");
        let partial = inbox.join(format!(".{name}.sftpreceipt.partial"));
        let file = fs::File::create(&partial).expect("create oversized receipt");
        file.set_len(size_bytes).expect("size oversized receipt");
        fs::rename(&partial, inbox.join(format!("{name}.sftpreceipt"))).expect("publish receipt");
    }

    /// Written to a temporary name and renamed, so a client never reads half a receipt.
    fn write_receipt(&self, name: &str, xml: &str) {
        let inbox = self.root.join("IN");
        let partial = inbox.join(format!(".{name}.sftpreceipt.partial"));
        fs::write(&partial, xml).expect("write receipt");
        fs::rename(&partial, inbox.join(format!("{name}.sftpreceipt"))).expect("publish receipt");
    }
}

/// A `TechnicalReceipt` as the platform would write it.
pub(crate) fn receipt_xml(
    file_transfer_uuid: &str,
    senders_file_id: &str,
    answer: &Answer,
) -> String {
    let error = |code: i32, code_description: &str, description: &str| {
        format!(
            "<ErrorMessage><ErrorCode>{code}</ErrorCode>\
             <ErrorCodeDescription>{code_description}</ErrorCodeDescription>\
             <ErrorDescription>{description}</ErrorDescription></ErrorMessage>"
        )
    };
    let id = format!("<SendersFileId>{senders_file_id}</SendersFileId>");
    let (id, verdict) = match answer {
        Answer::Success | Answer::Silent | Answer::Oversized { .. } => (
            id,
            "<Receipt><Message>SUCCESS</Message></Receipt>".to_owned(),
        ),
        Answer::SuccessWithoutId => (
            String::new(),
            "<Receipt><Message>SUCCESS</Message></Receipt>".to_owned(),
        ),
        Answer::Reject {
            code,
            code_description,
            description,
        } => (id, error(*code, code_description, description)),
        Answer::RejectWithoutId { codes } => (
            String::new(),
            codes
                .iter()
                .map(|code| error(*code, "Fejl", &format!("fejl nummer {code}")))
                .collect(),
        ),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ns2:TechnicalReceipt xmlns:ns2=\"{NAMESPACE}\">\
         <FileTransferUUID>{file_transfer_uuid}</FileTransferUUID>\
         {id}{verdict}</ns2:TechnicalReceipt>\n"
    )
}

/// A `BusinessReceipt` as the platform would write it.
pub(crate) fn business_receipt_xml(
    file_transfer_uuid: &str,
    file_name: &str,
    recipient: &str,
    acceptance: &str,
    reason: Option<&str>,
) -> String {
    let reason = reason.map_or(String::new(), |r| format!("<Reason>{r}</Reason>"));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ns2:BusinessReceipt xmlns:ns2=\"{NAMESPACE}\">\
         <FileTransferUUID>{file_transfer_uuid}</FileTransferUUID><Filename>{file_name}</Filename>\
         <Recipient>{recipient}</Recipient><FileAcceptance>{acceptance}</FileAcceptance>{reason}\
         </ns2:BusinessReceipt>\n"
    )
}
