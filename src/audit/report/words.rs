//! The report's two languages: every word the page shows, in Danish (the
//! default, for the kommune's økonomi) and in English, and the numbers, dates and
//! months written as each language writes them (`1.234,56` and `31-12-2026` in
//! Danish, `1,234.56` and `2026-12-31` in English).

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::FileAcceptance;

/// The page's language; its `<html lang>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Da,
    En,
}

/// The fixed texts of one language.
pub(super) struct Words {
    pub(super) lang: &'static str,
    pub(super) title: &'static str,
    pub(super) all_files: &'static str,
    pub(super) the_first: &'static str,
    pub(super) today: &'static str,
    pub(super) log: &'static str,
    pub(super) made_at: &'static str,
    pub(super) at_head: &'static str,
    pub(super) keep_head: &'static str,
    pub(super) keep_head_after: &'static str,
    pub(super) verify_passed: &'static str,
    pub(super) no_outbox: &'static str,
    pub(super) outbox_checked: &'static str,
    pub(super) outbox_checked_after: &'static str,
    pub(super) verify_failed: &'static str,
    pub(super) problems_in_english: &'static str,
    pub(super) payout_months: &'static str,
    pub(super) payout_months_intro: &'static str,
    pub(super) payout_month: &'static str,
    pub(super) unknown_month: &'static str,
    pub(super) file_months: &'static str,
    pub(super) file_months_intro: &'static str,
    pub(super) file_month: &'static str,
    pub(super) chart_title: &'static str,
    pub(super) official_files: &'static str,
    pub(super) sequence: &'static str,
    pub(super) file: &'static str,
    pub(super) created: &'static str,
    pub(super) files: &'static str,
    pub(super) records: &'static str,
    pub(super) plus: &'static str,
    pub(super) minus: &'static str,
    pub(super) net: &'static str,
    pub(super) delivery: &'static str,
    pub(super) accepted_at: &'static str,
    pub(super) total: &'static str,
    pub(super) no_files: &'static str,
    pub(super) history: &'static str,
    pub(super) history_intro: &'static str,
    pub(super) time: &'static str,
    pub(super) event: &'static str,
    pub(super) details: &'static str,
    pub(super) no_history: &'static str,
    pub(super) state_exported: &'static str,
    pub(super) state_accepted: &'static str,
    pub(super) state_rejected: &'static str,
    pub(super) state_reissued: &'static str,
    pub(super) step_exported: &'static str,
    pub(super) step_accepted: &'static str,
    pub(super) step_rejected: &'static str,
    pub(super) step_reissued: &'static str,
    pub(super) step_business: &'static str,
    pub(super) bytes: &'static str,
    pub(super) reason: &'static str,
    pub(super) from_recipient: &'static str,
    pub(super) months: [&'static str; 12],
    pub(super) short_months: [&'static str; 12],
    pub(super) currency: &'static str,
    decimal: char,
    group: char,
    date: &'static str,
    time_format: &'static str,
    attempt: &'static str,
    uploaded: &'static str,
    no_receipt: &'static str,
    business_accepted: &'static str,
    business_rejected: &'static str,
    business_not_notified: &'static str,
    file_count: (&'static str, &'static str),
}

const DA: Words = Words {
    lang: "da",
    title: "Afstemningsrapport for kommune",
    all_files: "Alle kommunens officielle filer.",
    the_first: "den første",
    today: "i dag",
    log: "Loggen",
    made_at: "Rapporten er dannet",
    at_head: "ud fra loggen ved kædehovedet",
    keep_head: "Gem kædehovedet:",
    keep_head_after: "viser senere, at loggen stadig indeholder det.",
    verify_passed: "verify bestået: hashkæden er intakt, og projektionerne svarer til en genafspilning af loggen;",
    no_outbox: "ingen udbakke blev kontrolleret.",
    outbox_checked: "alle officielle filer i udbakken",
    outbox_checked_after: "har den SHA-256, deres hændelse angiver.",
    verify_failed: "verify FEJLEDE: tallene nedenfor stammer fra en beskadiget ledger.",
    problems_in_english: "Fejlene, som verify skriver dem (på engelsk):",
    payout_months: "Totaler pr. udbetalingsmåned",
    payout_months_intro: "Periodens filer fordelt efter udbetalingsdatoen for den tilbageholdelse, hver post hører til (en korrektion hører til den tilbageholdelse, den retter). En fil med poster fra flere måneder tæller med i hver af dem.",
    payout_month: "Udbetalingsmåned",
    unknown_month: "ukendt (tilbageholdelsen findes ikke i loggen)",
    file_months: "Totaler pr. dannelsesmåned",
    file_months_intro: "De samme filer fordelt efter den måned, filen blev dannet (UTC). Summen er den samme som pr. udbetalingsmåned.",
    file_month: "Filen dannet",
    chart_title: "Netto pr. udbetalingsmåned (kr.)",
    official_files: "Officielle filer",
    sequence: "Løbenr.",
    file: "Fil",
    created: "Dannet",
    files: "Filer",
    records: "Poster",
    plus: "Plus (kr.)",
    minus: "Minus (kr.)",
    net: "Netto (kr.)",
    delivery: "Levering",
    accepted_at: "Godkendt",
    total: "I alt",
    no_files: "Kommunen har ingen officielle filer i perioden.",
    history: "Leveringshistorik",
    history_intro: "Hver hændelse i loggen om filernes levering, i den rækkefølge loggen registrerede dem (tidspunkt i UTC). Kvitteringernes koder og tekster gengives, som Serviceplatformen og modtageren skrev dem.",
    time: "Tidspunkt",
    event: "Hændelse",
    details: "Detaljer",
    no_history: "Ingen leveringshændelser.",
    state_exported: "dannet, endnu ikke leveret",
    state_accepted: "godkendt",
    state_rejected: "afvist",
    state_reissued: "genudsendt, venter på levering",
    step_exported: "Dannet (filens UUID er første leverings SendersFileId)",
    step_accepted: "Teknisk kvittering: godkendt",
    step_rejected: "Teknisk kvittering: afvist",
    step_reissued: "Genudsendt med nyt SendersFileId",
    step_business: "Forretningskvittering",
    bytes: "byte",
    reason: "Begrundelse:",
    from_recipient: "fra",
    months: [
        "januar", "februar", "marts", "april", "maj", "juni", "juli", "august", "september",
        "oktober", "november", "december",
    ],
    short_months: [
        "jan.", "feb.", "mar.", "apr.", "maj", "jun.", "jul.", "aug.", "sep.", "okt.", "nov.",
        "dec.",
    ],
    currency: "kr.",
    decimal: ',',
    group: '.',
    date: "%d-%m-%Y",
    time_format: "%d-%m-%Y %H:%M:%S UTC",
    attempt: "forsøg",
    uploaded: "Uploadet",
    no_receipt: "venter på kvittering",
    business_accepted: "godkendt",
    business_rejected: "afvist",
    business_not_notified: "modtageren kunne ikke underrettes",
    file_count: ("fil", "filer"),
};

const EN: Words = Words {
    lang: "en",
    title: "Reconciliation report for kommune",
    all_files: "All official files of the kommune.",
    the_first: "the first",
    today: "today",
    log: "The log",
    made_at: "Made",
    at_head: "from the log at head",
    keep_head: "Keep this head:",
    keep_head_after: "shows later that the log still holds it.",
    verify_passed: "verify passed: hash chain intact, projections equal a replay of the log;",
    no_outbox: "no outbox was checked.",
    outbox_checked: "every official file in the outbox",
    outbox_checked_after: "has the SHA-256 its event records.",
    verify_failed: "verify FAILED: the figures below come from a damaged ledger.",
    problems_in_english: "The problems, as verify words them:",
    payout_months: "Totals per payout month",
    payout_months_intro: "The period's files by the payout date of the withholding each entry belongs to (a correction belongs to the withholding it corrects). A file with entries of several months counts in each of them.",
    payout_month: "Payout month",
    unknown_month: "unknown (the withholding is not in the log)",
    file_months: "Totals per month the files were created",
    file_months_intro: "The same files by the month each file was created (UTC). The sum equals the sum per payout month.",
    file_month: "File created",
    chart_title: "Net per payout month (DKK)",
    official_files: "Official files",
    sequence: "Seq. no.",
    file: "File",
    created: "Created",
    files: "Files",
    records: "Records",
    plus: "Plus (DKK)",
    minus: "Minus (DKK)",
    net: "Net (DKK)",
    delivery: "Delivery",
    accepted_at: "Accepted",
    total: "Total",
    no_files: "No official file of this kommune in the period.",
    history: "Delivery history",
    history_intro: "Every event in the log about the files' delivery, in the order the log recorded them (times in UTC). Receipt codes and texts are shown as Serviceplatformen and the recipient wrote them.",
    time: "Time",
    event: "Event",
    details: "Details",
    no_history: "No delivery events.",
    state_exported: "exported, not yet delivered",
    state_accepted: "accepted",
    state_rejected: "rejected",
    state_reissued: "reissued, waiting for delivery",
    step_exported: "Exported (the file's UUID is its first delivery's SendersFileId)",
    step_accepted: "Technical receipt: accepted",
    step_rejected: "Technical receipt: rejected",
    step_reissued: "Reissued with a new SendersFileId",
    step_business: "Business receipt",
    bytes: "bytes",
    reason: "Reason:",
    from_recipient: "from",
    months: [
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ],
    short_months: [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ],
    currency: "DKK",
    decimal: '.',
    group: ',',
    date: "%Y-%m-%d",
    time_format: "%Y-%m-%d %H:%M:%S UTC",
    attempt: "attempt",
    uploaded: "Uploaded",
    no_receipt: "no receipt yet",
    business_accepted: "accepted",
    business_rejected: "rejected",
    business_not_notified: "the recipient could not be notified",
    file_count: ("file", "files"),
};

impl Lang {
    pub(super) fn words(self) -> &'static Words {
        match self {
            Lang::Da => &DA,
            Lang::En => &EN,
        }
    }
}

impl Words {
    /// A whole number with the language's thousands separator.
    pub(super) fn count(&self, value: impl Into<i128>) -> String {
        let value: i128 = value.into();
        let sign = if value < 0 { "-" } else { "" };
        format!("{sign}{}", self.grouped(value.unsigned_abs()))
    }

    /// An amount in øre as kroner: `1.234,56` or `1,234.56`.
    pub(super) fn kroner(&self, ore: impl Into<i128>) -> String {
        let ore: i128 = ore.into();
        let sign = if ore < 0 { "-" } else { "" };
        let abs = ore.unsigned_abs();
        format!(
            "{sign}{}{}{:02}",
            self.grouped(abs / 100),
            self.decimal,
            abs % 100
        )
    }

    fn grouped(&self, value: u128) -> String {
        let digits = value.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                out.push(self.group);
            }
            out.push(digit);
        }
        out
    }

    pub(super) fn date(&self, date: NaiveDate) -> String {
        date.format(self.date).to_string()
    }

    pub(super) fn time(&self, time: DateTime<Utc>) -> String {
        time.format(self.time_format).to_string()
    }

    /// A time in µs since the Unix epoch, as stored in the log.
    pub(super) fn time_us(&self, us: i64) -> String {
        DateTime::<Utc>::from_timestamp_micros(us)
            .map_or_else(|| format!("{us} µs (?)"), |time| self.time(time))
    }

    /// `december 2026`; `short` gives `dec. 2026` for the chart.
    pub(super) fn month(&self, (year, month): (i32, u32), short: bool) -> String {
        let names = if short {
            &self.short_months
        } else {
            &self.months
        };
        let name = month
            .checked_sub(1)
            .and_then(|index| usize::try_from(index).ok())
            .and_then(|index| names.get(index))
            .map_or_else(|| format!("{month:02}"), |name| (*name).to_string());
        format!("{name} {year:04}")
    }

    pub(super) fn file_count(&self, files: u64) -> String {
        let noun = if files == 1 {
            self.file_count.0
        } else {
            self.file_count.1
        };
        format!("{} {noun}", self.count(files))
    }

    pub(super) fn uploaded(&self, attempt: u32) -> String {
        format!("{} ({} {attempt})", self.uploaded, self.attempt)
    }

    pub(super) fn uploaded_state(&self, attempt: u32) -> String {
        format!(
            "{}, {}",
            self.uploaded(attempt).to_lowercase(),
            self.no_receipt
        )
    }

    pub(super) fn acceptance(&self, acceptance: FileAcceptance) -> &'static str {
        match acceptance {
            FileAcceptance::Accepted => self.business_accepted,
            FileAcceptance::Rejected => self.business_rejected,
            FileAcceptance::CouldNotNotifyRecipient => self.business_not_notified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_each_language_writes_them() {
        let da = Lang::Da.words();
        let en = Lang::En.words();
        assert_eq!(da.kroner(123_456i64), "1.234,56");
        assert_eq!(en.kroner(123_456i64), "1,234.56");
        assert_eq!(da.kroner(-5i64), "-0,05");
        assert_eq!(da.kroner(10_000_000_000_i64), "100.000.000,00");
        assert_eq!(da.count(999u64), "999");
        assert_eq!(da.count(1_000u64), "1.000");
        let date = NaiveDate::from_ymd_opt(2026, 2, 3).unwrap();
        assert_eq!(da.date(date), "03-02-2026");
        assert_eq!(en.date(date), "2026-02-03");
        assert_eq!(da.month((2027, 2), false), "februar 2027");
        assert_eq!(en.month((2027, 2), true), "Feb 2027");
        assert_eq!(da.file_count(1), "1 fil");
        assert_eq!(da.file_count(2), "2 filer");
    }
}
