//! The exporter: the batch export job, files as of any past time, byte-identical
//! reconstruction of official files, reissue, the files register, and delivery of
//! official files to Serviceplatformen (recording each step).

mod batch;
mod delivery;
mod entries;
mod error;
pub mod outbox;
mod reconstruct;

pub use batch::{
    default_outbox, plan, render_all, render_as_of, render_into, run_batch, ExportRequest,
    ExportedFile, PlannedFile, Progress, Quiet,
};
pub use delivery::{
    deliver, files_in_scope, pending_deliveries, DeliverRequest, DeliveryReport, DeliveryResult,
    PendingDelivery,
};
pub use entries::{for_each_record, withholding_record};
pub use error::ExportError;
pub use reconstruct::{plan_of, reconstruct, reissue, Reconstruction, Reissue};
