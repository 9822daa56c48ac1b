//! Serviceplatformen's SFTP documents, as KOMBIT's `SFTPTypes.xsd` defines them: the
//! `Trigger` we write, and the `TechnicalReceipt` and `BusinessReceipt` we read.
//!
//! The schema's child elements are unqualified (no `elementFormDefault`), so the
//! trigger has a prefixed root element (`ns2:Trigger`) and unprefixed children; the
//! tests validate every trigger shape against the schema with `xmllint --schema`.
//! Receipts are read by local name, so a default namespace, a prefix, or none all
//! parse; a root element in some other namespace is refused.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::domain::{FileAcceptance, ReceiptErrorCode};

/// The namespace of both documents.
pub const SFTP_NAMESPACE: &str = "http://serviceplatformen.dk/xml/wsdl/soap11/SFTP/1/types";

/// The `Message` of a receipt that accepts the file.
pub const SUCCESS: &str = "SUCCESS";

/// Why a trigger could not be written or a receipt could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XmlError {
    #[error("cannot write the trigger XML: {message}")]
    Serialize { message: String },

    #[error("the receipt is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },

    #[error("the receipt is not well-formed XML: {message}")]
    Malformed { message: String },

    #[error(
        "the receipt's root element is <{found}>, expected <TechnicalReceipt> or <BusinessReceipt>"
    )]
    WrongRoot { found: String },

    #[error("the receipt's ErrorCode {value:?} is not an integer (the schema's xs:int)")]
    BadErrorCode { value: String },

    #[error("the business receipt's FileAcceptance {value:?} is not ACCEPTED, REJECTED or COULD_NOT_NOTIFY_RECIPIENT")]
    BadFileAcceptance { value: String },

    #[error("the receipt's root element is in namespace {found:?}, expected {SFTP_NAMESPACE:?}")]
    WrongNamespace { found: String },

    #[error("the receipt has no {element} (or it is empty)")]
    Missing { element: &'static str },

    #[error("the receipt's SendersFileId {value:?} is not a UUID")]
    BadSendersFileId { value: String },

    #[error("the receipt's Receipt/Message is {message:?}, expected {SUCCESS:?}, and it lists no ErrorMessage")]
    UnknownMessage { message: String },

    #[error("the receipt says {SUCCESS:?} and also lists {count} ErrorMessage element(s)")]
    Contradictory { count: usize },
}

/// What the trigger tells the platform about the data file it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The data file's name in `OUT/`, without directory.
    pub file_name: String,
    pub size_bytes: u64,
    /// The sender's SFTP user name.
    pub sender: String,
    pub senders_file_id: Uuid,
    /// SFTP user names; one or more.
    pub recipients: Vec<String>,
    /// `FileContentDescriptor/SFTPDynamicRoutingInfo`; `None` leaves the descriptor empty.
    pub routing: Option<DynamicRouting>,
}

/// KOMBIT's `SFTPDynamicRoutingInfo`, in the schema's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicRouting {
    pub inf_ref: String,
    pub sender_it_system: Uuid,
    /// `urn:oio:cvr-nr:` and 8 digits.
    pub sender_authority: String,
    pub transaction_id: Uuid,
    /// xs:dateTime, UTC, whole seconds: `2026-02-01T06:00:00Z`.
    pub sender_timestamp: String,
    pub recipient_it_system: Option<Uuid>,
    /// `urn:oio:cvr-nr:` and 8 digits; required by the schema.
    pub recipient_authority: String,
}

/// A parsed `TechnicalReceipt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TechnicalReceipt {
    pub file_transfer_uuid: String,
    /// Optional in the schema: error receipts, above all, may leave it out.
    pub senders_file_id: Option<Uuid>,
    pub outcome: ReceiptOutcome,
}

/// The platform's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptOutcome {
    Success,
    /// One entry per `ErrorMessage`, in document order; never empty.
    Errors(Vec<ReceiptErrorCode>),
}

/// A parsed `BusinessReceipt`: what the recipient made of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessReceipt {
    pub file_transfer_uuid: String,
    /// `Filename`: the data file's name.
    pub file_name: String,
    pub recipient: String,
    pub acceptance: FileAcceptance,
    pub reason: Option<String>,
}

/// A document found in `IN/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InDocument {
    Technical(TechnicalReceipt),
    Business(BusinessReceipt),
}

#[derive(Serialize)]
struct TriggerDocument<'a> {
    #[serde(rename = "@xmlns:ns2")]
    namespace: &'static str,
    #[serde(rename = "FileDescriptor")]
    file_descriptor: FileDescriptor<'a>,
    #[serde(rename = "FileContentDescriptor")]
    file_content_descriptor: FileContentDescriptor,
}

#[derive(Serialize)]
struct FileDescriptor<'a> {
    #[serde(rename = "FileName")]
    file_name: &'a str,
    #[serde(rename = "SizeInBytes")]
    size_in_bytes: u64,
    #[serde(rename = "Sender")]
    sender: &'a str,
    #[serde(rename = "SendersFileId")]
    senders_file_id: String,
    /// Serialized as one `<Recipients>` element per entry, as the schema defines.
    #[serde(rename = "Recipients")]
    recipients: &'a [String],
}

#[derive(Serialize)]
struct FileContentDescriptor {
    #[serde(
        rename = "SFTPDynamicRoutingInfo",
        skip_serializing_if = "Option::is_none"
    )]
    routing: Option<RoutingXml>,
}

#[derive(Serialize)]
struct RoutingXml {
    #[serde(rename = "InfRef")]
    inf_ref: String,
    #[serde(rename = "SenderIt-system")]
    sender_it_system: String,
    #[serde(rename = "SenderAuthority")]
    sender_authority: String,
    #[serde(rename = "TransactionId")]
    transaction_id: String,
    #[serde(rename = "SenderTimestamp")]
    sender_timestamp: String,
    #[serde(rename = "RecipientIt-system", skip_serializing_if = "Option::is_none")]
    recipient_it_system: Option<String>,
    #[serde(rename = "RecipientAuthority")]
    recipient_authority: String,
}

/// The schema's `UUIDType` allows lower-case hex digits only.
fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// Renders the trigger document, with an XML declaration, as UTF-8 text.
pub fn trigger_xml(trigger: &Trigger) -> Result<String, XmlError> {
    let routing = trigger.routing.as_ref().map(|r| RoutingXml {
        inf_ref: r.inf_ref.clone(),
        sender_it_system: uuid_text(r.sender_it_system),
        sender_authority: r.sender_authority.clone(),
        transaction_id: uuid_text(r.transaction_id),
        sender_timestamp: r.sender_timestamp.clone(),
        recipient_it_system: r.recipient_it_system.map(uuid_text),
        recipient_authority: r.recipient_authority.clone(),
    });
    let document = TriggerDocument {
        namespace: SFTP_NAMESPACE,
        file_descriptor: FileDescriptor {
            file_name: &trigger.file_name,
            size_in_bytes: trigger.size_bytes,
            sender: &trigger.sender,
            senders_file_id: uuid_text(trigger.senders_file_id),
            recipients: &trigger.recipients,
        },
        file_content_descriptor: FileContentDescriptor { routing },
    };
    let mut text = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut serializer = quick_xml::se::Serializer::with_root(&mut text, Some("ns2:Trigger"))
        .map_err(serialize_error)?;
    serializer.indent(' ', 2);
    document.serialize(serializer).map_err(serialize_error)?;
    text.push('\n');
    Ok(text)
}

fn serialize_error(error: quick_xml::SeError) -> XmlError {
    XmlError::Serialize {
        message: error.to_string(),
    }
}

#[derive(Deserialize)]
struct ReceiptDocument {
    #[serde(rename = "FileTransferUUID")]
    file_transfer_uuid: Option<String>,
    #[serde(rename = "SendersFileId")]
    senders_file_id: Option<String>,
    #[serde(rename = "Receipt")]
    receipt: Option<ReceiptElement>,
    /// Error messages may sit beside `Receipt` or inside it; both are read.
    #[serde(rename = "ErrorMessage", default)]
    error_messages: Vec<ErrorMessageElement>,
}

#[derive(Deserialize)]
struct ReceiptElement {
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "ErrorMessage", default)]
    error_messages: Vec<ErrorMessageElement>,
}

#[derive(Deserialize)]
struct ErrorMessageElement {
    #[serde(rename = "ErrorCode")]
    code: Option<String>,
    #[serde(rename = "ErrorCodeDescription")]
    code_description: Option<String>,
    #[serde(rename = "ErrorDescription")]
    description: Option<String>,
}

/// Parses a `TechnicalReceipt`. Never panics; every defect is a precise [`XmlError`].
pub fn parse_receipt(bytes: &[u8]) -> Result<TechnicalReceipt, XmlError> {
    match parse_in_document(bytes)? {
        InDocument::Technical(receipt) => Ok(receipt),
        InDocument::Business(_) => Err(XmlError::WrongRoot {
            found: "BusinessReceipt".into(),
        }),
    }
}

/// Parses a document from `IN/`: a `TechnicalReceipt` or a `BusinessReceipt`.
pub fn parse_in_document(bytes: &[u8]) -> Result<InDocument, XmlError> {
    let text = std::str::from_utf8(bytes).map_err(|e| XmlError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let malformed = |e: quick_xml::DeError| XmlError::Malformed {
        message: e.to_string(),
    };
    match check_root(text)? {
        Root::Technical => {
            let document: ReceiptDocument = quick_xml::de::from_str(text).map_err(malformed)?;
            technical(document).map(InDocument::Technical)
        }
        Root::Business => {
            let document: BusinessDocument = quick_xml::de::from_str(text).map_err(malformed)?;
            business(document).map(InDocument::Business)
        }
    }
}

fn technical(document: ReceiptDocument) -> Result<TechnicalReceipt, XmlError> {
    let file_transfer_uuid = required(document.file_transfer_uuid, "FileTransferUUID")?;
    let senders_file_id = trimmed(document.senders_file_id)
        .map(|id| Uuid::parse_str(&id).map_err(|_| XmlError::BadSendersFileId { value: id }))
        .transpose()?;
    let outcome = outcome(document.receipt, document.error_messages)?;
    Ok(TechnicalReceipt {
        file_transfer_uuid,
        senders_file_id,
        outcome,
    })
}

#[derive(Deserialize)]
struct BusinessDocument {
    #[serde(rename = "FileTransferUUID")]
    file_transfer_uuid: Option<String>,
    #[serde(rename = "Filename")]
    file_name: Option<String>,
    #[serde(rename = "Recipient")]
    recipient: Option<String>,
    #[serde(rename = "FileAcceptance")]
    acceptance: Option<String>,
    #[serde(rename = "Reason")]
    reason: Option<String>,
}

fn business(document: BusinessDocument) -> Result<BusinessReceipt, XmlError> {
    let acceptance = required(document.acceptance, "FileAcceptance")?;
    let acceptance = match acceptance.as_str() {
        "ACCEPTED" => FileAcceptance::Accepted,
        "REJECTED" => FileAcceptance::Rejected,
        "COULD_NOT_NOTIFY_RECIPIENT" => FileAcceptance::CouldNotNotifyRecipient,
        _ => return Err(XmlError::BadFileAcceptance { value: acceptance }),
    };
    Ok(BusinessReceipt {
        file_transfer_uuid: required(document.file_transfer_uuid, "FileTransferUUID")?,
        file_name: required(document.file_name, "Filename")?,
        recipient: required(document.recipient, "Recipient")?,
        acceptance,
        reason: trimmed(document.reason),
    })
}

/// Decides SUCCESS or errors from wherever the error messages were found.
fn outcome(
    receipt: Option<ReceiptElement>,
    mut error_messages: Vec<ErrorMessageElement>,
) -> Result<ReceiptOutcome, XmlError> {
    let message = match receipt {
        Some(receipt) => {
            error_messages.extend(receipt.error_messages);
            trimmed(receipt.message)
        }
        None => None,
    };
    let errors = error_messages
        .into_iter()
        .map(receipt_error)
        .collect::<Result<Vec<_>, _>>()?;
    match (message.as_deref(), errors.is_empty()) {
        (Some(SUCCESS), true) => Ok(ReceiptOutcome::Success),
        (Some(SUCCESS), false) => Err(XmlError::Contradictory {
            count: errors.len(),
        }),
        (_, false) => Ok(ReceiptOutcome::Errors(errors)),
        (Some(other), true) => Err(XmlError::UnknownMessage {
            message: other.to_owned(),
        }),
        (None, true) => Err(XmlError::Missing {
            element: "Receipt/Message or ErrorMessage",
        }),
    }
}

fn receipt_error(element: ErrorMessageElement) -> Result<ReceiptErrorCode, XmlError> {
    let code = required(element.code, "ErrorMessage/ErrorCode")?;
    Ok(ReceiptErrorCode {
        code: code.parse().map_err(|_| XmlError::BadErrorCode {
            value: code.clone(),
        })?,
        code_description: trimmed(element.code_description).unwrap_or_default(),
        description: trimmed(element.description).unwrap_or_default(),
    })
}

/// Element text with surrounding whitespace removed; `None` when absent or blank.
fn trimmed(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn required(value: Option<String>, element: &'static str) -> Result<String, XmlError> {
    trimmed(value).ok_or(XmlError::Missing { element })
}

/// Which document a receipt file holds.
enum Root {
    Technical,
    Business,
}

/// The serde reader matches names without their prefixes and ignores the root's
/// name, so the root element and its namespace are checked here first.
fn check_root(text: &str) -> Result<Root, XmlError> {
    let mut reader = NsReader::from_str(text);
    loop {
        let (namespace, event) = reader
            .read_resolved_event()
            .map_err(|e| XmlError::Malformed {
                message: e.to_string(),
            })?;
        let start = match event {
            Event::Start(start) | Event::Empty(start) => start,
            Event::Eof => {
                return Err(XmlError::Missing {
                    element: "root element",
                })
            }
            _ => continue,
        };
        let local = start.local_name().as_ref().to_owned();
        let root = match local.as_str() {
            "TechnicalReceipt" => Root::Technical,
            "BusinessReceipt" => Root::Business,
            _ => return Err(XmlError::WrongRoot { found: local }),
        };
        return match namespace {
            ResolveResult::Unbound => Ok(root),
            ResolveResult::Bound(ns) if ns.as_ref() == SFTP_NAMESPACE => Ok(root),
            ResolveResult::Bound(ns) => Err(XmlError::WrongNamespace {
                found: ns.as_ref().to_owned(),
            }),
            ResolveResult::Unknown(prefix) => Err(XmlError::Malformed {
                message: format!("namespace prefix {prefix:?} of the root element is not declared"),
            }),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE_ID: &str = "6f1c8a53-2b4e-4d2a-9c1e-0a7b3c5d9e11";

    fn trigger() -> Trigger {
        Trigger {
            file_name: "SF2520_0751_20260201_000001.txt".into(),
            size_bytes: 1_290,
            sender: "KY & co".into(),
            senders_file_id: Uuid::parse_str(FILE_ID).unwrap(),
            recipients: vec!["UDK-DEBITOR".into(), "UDK-TEST".into()],
            routing: None,
        }
    }

    #[test]
    fn trigger_has_the_namespace_and_every_field() {
        let xml = trigger_xml(&trigger()).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ns2:Trigger xmlns:ns2=\"http://serviceplatformen.dk/xml/wsdl/soap11/SFTP/1/types\">"), "{xml}");
        for expected in [
            "<FileName>SF2520_0751_20260201_000001.txt</FileName>",
            "<SizeInBytes>1290</SizeInBytes>",
            "<Sender>KY &amp; co</Sender>",
            &format!("<SendersFileId>{FILE_ID}</SendersFileId>"),
            "<Recipients>UDK-DEBITOR</Recipients>",
            "<Recipients>UDK-TEST</Recipients>",
            "</FileDescriptor>\n  <FileContentDescriptor/>\n</ns2:Trigger>\n",
        ] {
            assert!(xml.contains(expected), "missing {expected:?} in\n{xml}");
        }
    }

    #[test]
    fn trigger_reads_back_with_a_namespace_aware_reader() {
        let xml = trigger_xml(&trigger()).unwrap();
        let mut reader = NsReader::from_str(&xml);
        loop {
            match reader.read_resolved_event().unwrap() {
                (ResolveResult::Bound(ns), Event::Start(start)) => {
                    assert_eq!(ns.as_ref(), SFTP_NAMESPACE);
                    assert_eq!(start.local_name().as_ref(), "Trigger");
                    break;
                }
                (_, Event::Eof) => panic!("no root element"),
                _ => {}
            }
        }
    }

    fn success_receipt(root_open: &str, root_close: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n{root_open}\n  <FileTransferUUID>\n    47570fc2-be65-4ab1-8da7-3bcc086bfef9\n  </FileTransferUUID>\n  \
             <SendersFileId>{FILE_ID}</SendersFileId>\n  <Receipt><Message>SUCCESS</Message></Receipt>\n{root_close}"
        )
    }

    #[test]
    fn success_receipt_parses_with_prefix_default_namespace_or_none() {
        for (open, close) in [
            (
                format!("<ns2:TechnicalReceipt xmlns:ns2=\"{SFTP_NAMESPACE}\">"),
                "</ns2:TechnicalReceipt>",
            ),
            (
                format!("<TechnicalReceipt xmlns=\"{SFTP_NAMESPACE}\">"),
                "</TechnicalReceipt>",
            ),
            ("<TechnicalReceipt>".to_owned(), "</TechnicalReceipt>"),
        ] {
            let receipt = parse_receipt(success_receipt(&open, close).as_bytes()).unwrap();
            assert_eq!(
                receipt.file_transfer_uuid,
                "47570fc2-be65-4ab1-8da7-3bcc086bfef9"
            );
            assert_eq!(receipt.senders_file_id.unwrap().to_string(), FILE_ID);
            assert_eq!(receipt.outcome, ReceiptOutcome::Success);
        }
    }

    #[test]
    fn error_receipt_lists_every_error_in_order() {
        let xml = format!(
            "<sp:TechnicalReceipt xmlns:sp=\"{SFTP_NAMESPACE}\"><sp:FileTransferUUID>t-1</sp:FileTransferUUID>\
             <sp:SendersFileId>{FILE_ID}</sp:SendersFileId>\
             <sp:ErrorMessage><sp:ErrorCode>101</sp:ErrorCode><sp:ErrorCodeDescription>Size mismatch</sp:ErrorCodeDescription>\
             <sp:ErrorDescription>SizeInBytes 10, file has 9</sp:ErrorDescription></sp:ErrorMessage>\
             <sp:ErrorMessage><sp:ErrorCode>202</sp:ErrorCode></sp:ErrorMessage></sp:TechnicalReceipt>"
        );
        let receipt = parse_receipt(xml.as_bytes()).unwrap();
        let ReceiptOutcome::Errors(errors) = receipt.outcome else {
            panic!("expected errors")
        };
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].code, 101);
        assert_eq!(errors[0].code_description, "Size mismatch");
        assert_eq!(errors[0].description, "SizeInBytes 10, file has 9");
        assert_eq!(errors[1].code, 202);
        assert_eq!(errors[1].description, "");
    }

    #[test]
    fn error_messages_inside_receipt_are_read_too() {
        let xml = format!(
            "<TechnicalReceipt><FileTransferUUID>t-2</FileTransferUUID><SendersFileId>{FILE_ID}</SendersFileId>\
             <Receipt><ErrorMessage><ErrorCode>7</ErrorCode></ErrorMessage></Receipt></TechnicalReceipt>"
        );
        let receipt = parse_receipt(xml.as_bytes()).unwrap();
        assert!(matches!(receipt.outcome, ReceiptOutcome::Errors(ref e) if e[0].code == 7));
    }

    #[test]
    fn malformed_receipts_give_a_precise_error() {
        let ok_body = format!(
            "<FileTransferUUID>t</FileTransferUUID><SendersFileId>{FILE_ID}</SendersFileId>"
        );
        let cases: Vec<(Vec<u8>, XmlError)> = vec![
            (b"".to_vec(), XmlError::Missing { element: "root element" }),
            (b"\xff\xfe<".to_vec(), XmlError::NotUtf8 { offset: 0 }),
            (b"<Trigger/>".to_vec(), XmlError::WrongRoot { found: "Trigger".into() }),
            (
                b"<TechnicalReceipt xmlns=\"urn:other\"/>".to_vec(),
                XmlError::WrongNamespace { found: "urn:other".into() },
            ),
            (
                format!("<TechnicalReceipt><SendersFileId>{FILE_ID}</SendersFileId></TechnicalReceipt>").into_bytes(),
                XmlError::Missing { element: "FileTransferUUID" },
            ),
            (
                b"<TechnicalReceipt><FileTransferUUID>t</FileTransferUUID><SendersFileId>42</SendersFileId></TechnicalReceipt>".to_vec(),
                XmlError::BadSendersFileId { value: "42".into() },
            ),
            (
                format!("<TechnicalReceipt>{ok_body}</TechnicalReceipt>").into_bytes(),
                XmlError::Missing { element: "Receipt/Message or ErrorMessage" },
            ),
            (
                format!("<TechnicalReceipt>{ok_body}<Receipt><Message>MAYBE</Message></Receipt></TechnicalReceipt>").into_bytes(),
                XmlError::UnknownMessage { message: "MAYBE".into() },
            ),
            (
                format!("<TechnicalReceipt>{ok_body}<Receipt><Message>SUCCESS</Message></Receipt><ErrorMessage><ErrorCode>1</ErrorCode></ErrorMessage></TechnicalReceipt>").into_bytes(),
                XmlError::Contradictory { count: 1 },
            ),
            (
                format!("<TechnicalReceipt>{ok_body}<ErrorMessage><ErrorCode>E-SIZE</ErrorCode></ErrorMessage></TechnicalReceipt>").into_bytes(),
                XmlError::BadErrorCode { value: "E-SIZE".into() },
            ),
            (
                b"<BusinessReceipt><FileTransferUUID>t</FileTransferUUID><Filename>f</Filename><Recipient>r</Recipient><FileAcceptance>MAYBE</FileAcceptance></BusinessReceipt>".to_vec(),
                XmlError::BadFileAcceptance { value: "MAYBE".into() },
            ),
            (
                format!("<TechnicalReceipt>{ok_body}<ErrorMessage><ErrorDescription>x</ErrorDescription></ErrorMessage></TechnicalReceipt>").into_bytes(),
                XmlError::Missing { element: "ErrorMessage/ErrorCode" },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                parse_receipt(&bytes),
                Err(expected),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    /// Regression: a receipt without SendersFileId (optional in KOMBIT's schema) was
    /// refused, so an error receipt's codes were never recorded.
    #[test]
    fn receipts_without_senders_file_id_parse_success_and_errors() {
        let success = "<TechnicalReceipt><FileTransferUUID>t-3</FileTransferUUID>\
                       <Receipt><Message>SUCCESS</Message></Receipt></TechnicalReceipt>";
        let receipt = parse_receipt(success.as_bytes()).unwrap();
        assert_eq!(receipt.senders_file_id, None);
        assert_eq!(receipt.outcome, ReceiptOutcome::Success);
        let error = "<TechnicalReceipt><FileTransferUUID>t-4</FileTransferUUID>\
                     <ErrorMessage><ErrorCode>-12</ErrorCode><ErrorCodeDescription>d</ErrorCodeDescription><ErrorDescription>x</ErrorDescription></ErrorMessage>\
                     <ErrorMessage><ErrorCode>40</ErrorCode><ErrorCodeDescription>e</ErrorCodeDescription><ErrorDescription>y</ErrorDescription></ErrorMessage>\
                     </TechnicalReceipt>";
        let receipt = parse_receipt(error.as_bytes()).unwrap();
        assert_eq!(receipt.senders_file_id, None);
        let ReceiptOutcome::Errors(errors) = receipt.outcome else {
            panic!("expected errors")
        };
        assert_eq!(errors.iter().map(|e| e.code).collect::<Vec<_>>(), [-12, 40]);
    }

    #[test]
    fn business_receipts_parse_every_acceptance() {
        for (text, acceptance) in [
            ("ACCEPTED", FileAcceptance::Accepted),
            ("REJECTED", FileAcceptance::Rejected),
            (
                "COULD_NOT_NOTIFY_RECIPIENT",
                FileAcceptance::CouldNotNotifyRecipient,
            ),
        ] {
            let xml = format!(
                "<ns2:BusinessReceipt xmlns:ns2=\"{SFTP_NAMESPACE}\"><FileTransferUUID>t-5</FileTransferUUID>\
                 <Filename>SF2520_0751_20260201_000001.txt</Filename><Recipient>UDK</Recipient>\
                 <FileAcceptance>{text}</FileAcceptance><Reason>because</Reason></ns2:BusinessReceipt>"
            );
            let InDocument::Business(receipt) = parse_in_document(xml.as_bytes()).unwrap() else {
                panic!("expected a business receipt")
            };
            assert_eq!(receipt.acceptance, acceptance);
            assert_eq!(receipt.file_name, "SF2520_0751_20260201_000001.txt");
            assert_eq!(receipt.reason.as_deref(), Some("because"));
        }
    }

    #[test]
    fn truncated_or_broken_xml_is_malformed_not_a_panic() {
        let full = success_receipt(
            &format!("<ns2:TechnicalReceipt xmlns:ns2=\"{SFTP_NAMESPACE}\">"),
            "</ns2:TechnicalReceipt>",
        );
        for cut in 0..full.len() {
            let _ = parse_receipt(&full.as_bytes()[..cut]);
        }
        let broken = "<TechnicalReceipt><FileTransferUUID>t</SendersFileId></TechnicalReceipt>";
        assert!(matches!(
            parse_receipt(broken.as_bytes()),
            Err(XmlError::Malformed { .. })
        ));
        let unbound = "<x:TechnicalReceipt></x:TechnicalReceipt>";
        assert!(matches!(
            parse_receipt(unbound.as_bytes()),
            Err(XmlError::Malformed { .. })
        ));
    }
}
