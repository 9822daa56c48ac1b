//! Whole transfers for the transport tests: upload, then wait for the receipt, with
//! no ledger in between (the exporter records an event after each step instead;
//! see `sf2520::export::deliver`).

use std::collections::HashSet;

use sf2520::transport::{
    await_receipt, run_limited, upload, DeliveryOutcome, OutgoingFile, SftpConfig, TransportError,
};

/// Uploads the file and waits for the platform's receipt.
pub(crate) async fn deliver_file(
    config: &SftpConfig,
    file: &OutgoingFile,
) -> Result<DeliveryOutcome, TransportError> {
    upload(config, file).await?;
    let received = await_receipt(config, &file.name, file.senders_file_id, &HashSet::new()).await?;
    Ok(received.outcome())
}

/// Delivers every file, at most `concurrency` at a time; results in input order.
pub(crate) async fn deliver_all(
    config: &SftpConfig,
    files: &[OutgoingFile],
) -> Vec<Result<DeliveryOutcome, TransportError>> {
    run_limited(config.concurrency, files, |file| deliver_file(config, file)).await
}
