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
pub(super) const SFTP_NAMESPACE: &str = "http://serviceplatformen.dk/xml/wsdl/soap11/SFTP/1/types";

/// The `Message` of a receipt that accepts the file.
pub(super) const SUCCESS: &str = "SUCCESS";

/// Why a trigger could not be written or a receipt could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XmlError {
    #[error("cannot write the trigger XML: {message}")]
    Serialize { message: String },

    #[error("the receipt is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },

    #[error("the receipt is not well-formed XML at byte {offset}: {message}")]
    Malformed { offset: u64, message: String },

    /// Well-formed XML whose elements are not shaped as `SFTPTypes.xsd` defines a
    /// receipt (an element twice, an element where text belongs).
    #[error("the receipt's elements are not shaped as SFTPTypes.xsd defines them: {message}")]
    Shape { message: String },

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
    let malformed = |e: quick_xml::DeError| XmlError::Shape {
        message: e.to_string(),
    };
    check_characters(text)?;
    match check_document(text)? {
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
        code_description: present(
            element.code_description,
            "ErrorMessage/ErrorCodeDescription",
        )?,
        description: present(element.description, "ErrorMessage/ErrorDescription")?,
    })
}

/// Element text with surrounding whitespace removed, which the schema requires
/// but allows to be empty.
fn present(value: Option<String>, element: &'static str) -> Result<String, XmlError> {
    value
        .map(|v| v.trim().to_owned())
        .ok_or(XmlError::Missing { element })
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

/// An element's namespace as the reader resolved it, owned, so that the reader
/// can be asked for its position while it is held.
enum ElementNamespace {
    Unbound,
    Bound(String),
    Undeclared(String),
}

impl ElementNamespace {
    fn of(resolved: ResolveResult<'_>) -> Self {
        match resolved {
            ResolveResult::Unbound => ElementNamespace::Unbound,
            ResolveResult::Bound(ns) => ElementNamespace::Bound(ns.as_ref().to_owned()),
            ResolveResult::Unknown(prefix) => ElementNamespace::Undeclared(prefix),
        }
    }
}

/// Reads the whole document once, before serde sees it. The serde reader stops at
/// the root's end tag, ignores the root's name and accepts undeclared prefixes, so
/// well-formedness (one root element, nothing but comments and white space around
/// it, declared prefixes, known entities, attributes) is checked here, and then
/// the root element and its namespace.
fn check_document(text: &str) -> Result<Root, XmlError> {
    let mut reader = NsReader::from_str(text);
    let mut scan = Scan::default();
    loop {
        let offset = reader.buffer_position();
        let malformed = |message: String| XmlError::Malformed { offset, message };
        let read = reader
            .read_resolved_event()
            .map(|(namespace, event)| (ElementNamespace::of(namespace), event));
        let (namespace, event) = read.map_err(|e| XmlError::Malformed {
            offset: reader.error_position(),
            message: e.to_string(),
        })?;
        // Only element events carry a namespace, so this is an element's prefix.
        if let ElementNamespace::Undeclared(prefix) = &namespace {
            return Err(malformed(format!(
                "the namespace prefix {prefix:?} of an element is not declared"
            )));
        }
        let outside_root = scan.open_elements.is_empty();
        match event {
            Event::Start(ref start) => scan.start(start, namespace, true).map_err(malformed)?,
            Event::Empty(ref start) => scan.start(start, namespace, false).map_err(malformed)?,
            // The reader has matched the end tag's name to its start tag's.
            Event::End(_) => {
                if scan.open_elements.pop().is_none() {
                    return Err(malformed("an end tag without a start tag".into()));
                }
            }
            Event::Text(ref text) if outside_root => {
                if !text.bytes().all(|byte| byte.is_ascii_whitespace()) {
                    return Err(malformed("text outside the root element".into()));
                }
            }
            Event::CData(_) | Event::GeneralRef(_) if outside_root => {
                return Err(malformed("text outside the root element".into()));
            }
            Event::GeneralRef(ref reference) => check_reference(reference).map_err(malformed)?,
            Event::Eof => match scan.open_elements.last() {
                None => return judge_root(scan.root),
                Some(name) => {
                    return Err(malformed(format!(
                        "the document ends inside <{name}>: is the file cut short?"
                    )))
                }
            },
            Event::Text(_)
            | Event::CData(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => {}
        }
    }
}

/// What [`check_document`] has seen so far.
#[derive(Default)]
struct Scan {
    /// The root element's local name and namespace, once it has been read.
    root: Option<(String, ElementNamespace)>,
    /// The names of the elements open at this point, outermost first.
    open_elements: Vec<String>,
}

impl Scan {
    /// A start tag (`opens`) or an empty-element tag.
    fn start(
        &mut self,
        start: &quick_xml::events::BytesStart<'_>,
        namespace: ElementNamespace,
        opens: bool,
    ) -> Result<(), String> {
        let name = start.name().as_ref().to_owned();
        if let Some(error) = start.attributes().find_map(Result::err) {
            return Err(format!("an attribute of <{name}>: {error}"));
        }
        if self.open_elements.is_empty() {
            if self.root.is_some() {
                return Err(format!(
                    "<{name}> follows the root element; a document has one root"
                ));
            }
            self.root = Some((start.local_name().as_ref().to_owned(), namespace));
        }
        if opens {
            self.open_elements.push(name);
        }
        Ok(())
    }
}

/// XML 1.0's `Char` production (§2.2): tab, line feed, carriage return and the
/// rest of Unicode but the C0 controls, the surrogates, U+FFFE and U+FFFF. ESC
/// (U+001B), which starts terminal sequences, is not a character of XML 1.0,
/// neither raw nor as `&#27;`. (The C1 controls are: XML 1.0 only discourages
/// them, so a receipt holding one is read, and printed escaped.)
fn is_xml_char(character: char) -> bool {
    matches!(
        character,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..
    )
}

/// Refuses a document holding a character XML 1.0 does not allow; quick-xml
/// reads them as text.
fn check_characters(text: &str) -> Result<(), XmlError> {
    match text.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        None => Ok(()),
        Some((offset, character)) => Err(XmlError::Malformed {
            offset: super::transfer::byte_count(&text.as_bytes()[..offset]),
            message: format!(
                "U+{:04X} is not a character XML 1.0 allows",
                u32::from(character)
            ),
        }),
    }
}

/// A character reference or one of XML's five predefined entities; a DTD's own
/// entities are not read, so any other name is an error.
fn check_reference(reference: &quick_xml::events::BytesRef<'_>) -> Result<(), String> {
    match reference.resolve_char_ref() {
        Err(error) => Err(format!("the character reference &{};: {error}", &**reference)),
        Ok(Some(character)) if !is_xml_char(character) => Err(format!(
            "the character reference &{}; stands for U+{:04X}, which is not a character \
             XML 1.0 allows",
            &**reference,
            u32::from(character)
        )),
        Ok(Some(_)) => Ok(()),
        Ok(None) if quick_xml::escape::resolve_xml_entity(reference).is_some() => Ok(()),
        Ok(None) => Err(format!(
            "unknown entity &{};: only &lt; &gt; &amp; &apos; &quot; and character references are defined",
            &**reference
        )),
    }
}

/// Which receipt the (well-formed) document's root element says it is.
fn judge_root(root: Option<(String, ElementNamespace)>) -> Result<Root, XmlError> {
    let Some((local, namespace)) = root else {
        return Err(XmlError::Missing {
            element: "root element",
        });
    };
    let root = match local.as_str() {
        "TechnicalReceipt" => Root::Technical,
        "BusinessReceipt" => Root::Business,
        _ => return Err(XmlError::WrongRoot { found: local }),
    };
    match namespace {
        ElementNamespace::Unbound => Ok(root),
        ElementNamespace::Bound(ns) if ns == SFTP_NAMESPACE => Ok(root),
        ElementNamespace::Bound(ns) => Err(XmlError::WrongNamespace { found: ns }),
        // check_document refuses an undeclared prefix as it reads the element.
        ElementNamespace::Undeclared(prefix) => Err(XmlError::Malformed {
            offset: 0,
            message: format!("namespace prefix {prefix:?} of the root element is not declared"),
        }),
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
             <sp:ErrorMessage><sp:ErrorCode>202</sp:ErrorCode><sp:ErrorCodeDescription/><sp:ErrorDescription/></sp:ErrorMessage></sp:TechnicalReceipt>"
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
             <Receipt><ErrorMessage><ErrorCode>7</ErrorCode><ErrorCodeDescription>d</ErrorCodeDescription><ErrorDescription>x</ErrorDescription></ErrorMessage></Receipt></TechnicalReceipt>"
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
                format!("<TechnicalReceipt>{ok_body}<Receipt><Message>SUCCESS</Message></Receipt><ErrorMessage><ErrorCode>1</ErrorCode><ErrorCodeDescription/><ErrorDescription/></ErrorMessage></TechnicalReceipt>").into_bytes(),
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

    /// Every proper prefix of a valid receipt is refused: one holding no element
    /// yet has no root element, any other one is not well-formed XML. Never `Ok`,
    /// never some other kind (a truncated receipt must not read as a receipt that
    /// lacks an element).
    #[test]
    fn every_prefix_of_a_valid_receipt_is_refused_as_such() {
        let error_body = "<FileTransferUUID>t-6</FileTransferUUID><ErrorMessage><ErrorCode>101</ErrorCode>\
                          <ErrorCodeDescription>d</ErrorCodeDescription><ErrorDescription>x</ErrorDescription></ErrorMessage>";
        let business_body = "<FileTransferUUID>t-7</FileTransferUUID><Filename>f</Filename>\
                             <Recipient>UDK</Recipient><FileAcceptance>ACCEPTED</FileAcceptance>";
        let documents = [
            success_receipt(
                &format!("<ns2:TechnicalReceipt xmlns:ns2=\"{SFTP_NAMESPACE}\">"),
                "</ns2:TechnicalReceipt>",
            ),
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TechnicalReceipt>{error_body}</TechnicalReceipt>\n"),
            format!("<BusinessReceipt xmlns=\"{SFTP_NAMESPACE}\">{business_body}</BusinessReceipt>"),
        ];
        for document in documents {
            assert!(parse_in_document(document.as_bytes()).is_ok(), "{document}");
            let root_closed = document.rfind('>').expect("a root element") + 1;
            for cut in 0..root_closed {
                let prefix = &document[..cut];
                let result = parse_in_document(prefix.as_bytes());
                let before_root = prefix
                    .trim_start()
                    .strip_prefix("<?xml")
                    .map_or(prefix.trim(), |rest| {
                        rest.split_once("?>").map_or("?", |(_, after)| after.trim())
                    });
                if before_root.is_empty() {
                    assert_eq!(
                        result,
                        Err(XmlError::Missing {
                            element: "root element"
                        }),
                        "{prefix:?}"
                    );
                } else {
                    let cut_at = u64::try_from(cut).expect("a short document");
                    assert!(
                        matches!(result, Err(XmlError::Malformed { offset, .. }) if offset <= cut_at),
                        "{prefix:?} gave {result:?}"
                    );
                }
            }
        }
    }

    /// Regression: quick-xml's serde reader stops at the root's end tag, so
    /// whatever followed it (a second receipt, a stray element, text) was accepted.
    #[test]
    fn anything_but_one_root_element_is_malformed() {
        let receipt = "<TechnicalReceipt><FileTransferUUID>t</FileTransferUUID>\
                       <Receipt><Message>SUCCESS</Message></Receipt></TechnicalReceipt>";
        for document in [
            format!("{receipt}<Other/>"),
            format!("{receipt}trailing text"),
            format!("{receipt}{receipt}"),
            format!("garbage{receipt}"),
            "garbage".to_owned(),
            "<<<>>>".to_owned(),
            receipt
                .replace("<Receipt>", "<ns3:Receipt>")
                .replace("</Receipt>", "</ns3:Receipt>"),
            receipt.replace("<Message>SUCCESS", "<Message>SUC&bogus;CESS"),
            receipt.replace("<TechnicalReceipt>", "<TechnicalReceipt a='1' a='2'>"),
            receipt.replace("</TechnicalReceipt>", "</Other>"),
            "<x:TechnicalReceipt></x:TechnicalReceipt>".to_owned(),
        ] {
            let result = parse_in_document(document.as_bytes());
            assert!(
                matches!(result, Err(XmlError::Malformed { .. })),
                "{document:?} gave {result:?}"
            );
        }
        assert_eq!(
            parse_in_document(
                format!("<!-- a comment -->\n{receipt}\n<!-- another -->\n").as_bytes()
            )
            .map(|_| ()),
            Ok(()),
            "comments and white space around the root are well-formed"
        );
        let twice = receipt.replace(
            "<Receipt>",
            "<FileTransferUUID>u</FileTransferUUID><Receipt>",
        );
        assert!(
            matches!(parse_in_document(twice.as_bytes()), Err(XmlError::Shape { ref message }) if message.contains("FileTransferUUID")),
            "{twice}"
        );
    }

    /// Regression: ESC in a receipt's text, raw or as `&#27;`, was read and
    /// reached the terminal. XML 1.0 forbids it (and every C0 control but tab,
    /// line feed and carriage return); the C1 controls it allows.
    #[test]
    fn characters_xml_forbids_are_refused_raw_and_as_references() {
        let receipt = |description: &str| {
            format!(
                "<TechnicalReceipt><FileTransferUUID>t</FileTransferUUID><ErrorMessage><ErrorCode>1</ErrorCode>\
                 <ErrorCodeDescription>d</ErrorCodeDescription><ErrorDescription>{description}</ErrorDescription>\
                 </ErrorMessage></TechnicalReceipt>"
            )
        };
        for bad in [
            "a\u{1b}[31mred",
            "a&#27;[2J",
            "a&#x1B;[2J",
            "bell\u{7}",
            "&#x8;",
            "nul&#0;",
            "\u{ffff}",
            "&#xFFFE;",
        ] {
            let result = parse_receipt(receipt(bad).as_bytes());
            assert!(
                matches!(&result, Err(XmlError::Malformed { message, .. }) if message.contains("XML")),
                "{bad:?} gave {result:?}"
            );
            let shown = result.unwrap_err().to_string();
            assert!(!shown.contains('\u{1b}'), "{shown:?}");
        }
        for allowed in [
            "tab\there",
            "line\nbreak\r",
            "c1 \u{9b}31m",
            "&#155;",
            "&#9;æøå",
        ] {
            assert!(
                parse_receipt(receipt(allowed).as_bytes()).is_ok(),
                "{allowed:?}"
            );
        }
        let offset = receipt("x\u{1b}").find('\u{1b}').unwrap();
        assert!(
            matches!(parse_receipt(receipt("x\u{1b}").as_bytes()), Err(XmlError::Malformed { offset: at, .. }) if at == u64::try_from(offset).unwrap()),
            "the error names the byte"
        );
    }

    /// Regression: a missing ErrorCodeDescription or ErrorDescription (both required
    /// by the schema) was read as an empty string; an empty element still is one.
    #[test]
    fn an_error_message_needs_all_three_elements() {
        let receipt = |inner: &str| {
            format!("<TechnicalReceipt><FileTransferUUID>t</FileTransferUUID><ErrorMessage>{inner}</ErrorMessage></TechnicalReceipt>")
        };
        assert_eq!(
            parse_receipt(
                receipt("<ErrorCode>1</ErrorCode><ErrorDescription>x</ErrorDescription>")
                    .as_bytes()
            ),
            Err(XmlError::Missing {
                element: "ErrorMessage/ErrorCodeDescription"
            })
        );
        assert_eq!(
            parse_receipt(
                receipt("<ErrorCode>1</ErrorCode><ErrorCodeDescription>d</ErrorCodeDescription>")
                    .as_bytes()
            ),
            Err(XmlError::Missing {
                element: "ErrorMessage/ErrorDescription"
            })
        );
        let empty = parse_receipt(
            receipt("<ErrorCode>1</ErrorCode><ErrorCodeDescription/><ErrorDescription></ErrorDescription>").as_bytes(),
        )
        .unwrap();
        assert_eq!(
            empty.outcome,
            ReceiptOutcome::Errors(vec![ReceiptErrorCode {
                code: 1,
                code_description: String::new(),
                description: String::new(),
            }])
        );
    }
}
