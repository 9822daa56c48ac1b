#!/usr/bin/env python3
"""Reference verifier for an sf2520 ledger, written from docs/log-format.md alone.

Python 3 standard library only; it never writes to the ledger (opened read-only).

    verify_ledger.py DATA_DIR_OR_LEDGER [--outbox DIR | --no-outbox]
                     [--key-file FILE]
                     [--expect-head POS:HASH ...] [--expect-heads FILE ...]
                     [--checkpoint FILE ... --public-key HEX]
    verify_ledger.py --check-vectors docs/log-format.md

It walks the hash chain from position 1, decodes every payload, checks the
`files` and `entries` index projections against the log, re-renders every
official file from the log (docs/sf2520-format.md) and checks its SHA-256
against its FileExported event and against the file in the outbox
(DATA_DIR/outbox by default, when it exists), and checks that the log still
holds every expected head (plain, or from a checkpoint whose ed25519 signature
it checks with the given public key). A ledger that seals its CPRs needs its key
file (--key-file, or DATA_DIR/ledger.kek) to re-render files; without it, or for
a file that holds an agreement erased under retention, the file's count and sums
are checked and its SHA-256 is reported as not checkable, which is no damage.
Exit status: 0 if everything holds, 1 if
anything is damaged (every problem is printed, one per line, starting with
DAMAGED), 2 if it could not run at all (a bad checkpoint signature included).
"""

import argparse
import datetime
import hashlib
import hmac
import os
import sqlite3
import struct
import sys

GENESIS = bytes(32)
# The schema version of each envelope: V1 (plain CPRs) and V2 (sealed CPRs).
SCHEMA_VERSIONS = {0: 1, 1: 2}
SEALED_CPR_LEN = 38

EVENT_TYPES = [
    "AgreementRegistered",
    "AgreementEnded",
    "WithholdingRecorded",
    "WithholdingCorrected",
    "FileExported",
    "FileReissued",
    "FileUploaded",
    "ReceiptReceived",
    "TechnicalReceiptReceived",
    "BusinessReceiptReceived",
    "RetentionApplied",
    "LedgerSealed",
    "LossAccepted",
]

# BusinessReceiptReceived's acceptance, by its index.
ACCEPTANCES = ["Accepted", "Rejected", "CouldNotNotifyRecipient"]


class Damage(Exception):
    """A payload that does not decode as docs/log-format.md says."""


# ---------------------------------------------------------------- postcard


class Reader:
    """Reads postcard values from one payload; every read checks the bounds."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    def byte(self):
        if self.at >= len(self.data):
            raise Damage("payload ends early at byte %d" % self.at)
        value = self.data[self.at]
        self.at += 1
        return value

    def raw(self, count):
        if self.at + count > len(self.data):
            raise Damage("payload ends early: %d bytes wanted at byte %d" % (count, self.at))
        value = self.data[self.at:self.at + count]
        self.at += count
        return value

    def varint(self, bits):
        value = 0
        shift = 0
        max_bytes = (bits + 6) // 7
        for _ in range(max_bytes):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte & 0x80 == 0:
                if value >= 1 << bits:
                    raise Damage("varint %d does not fit %d bits" % (value, bits))
                return value
        raise Damage("varint longer than %d bytes" % max_bytes)

    def u16(self):
        return self.varint(16)

    def u32(self):
        return self.varint(32)

    def u64(self):
        return self.varint(64)

    def signed(self, bits):
        zigzag = self.varint(bits)
        return (zigzag >> 1) ^ -(zigzag & 1)

    def i32(self):
        return self.signed(32)

    def i64(self):
        return self.signed(64)

    def boolean(self):
        value = self.byte()
        if value > 1:
            raise Damage("bool byte %d" % value)
        return value == 1

    def string(self):
        length = self.u64()
        try:
            return self.raw(length).decode("utf-8")
        except UnicodeDecodeError as error:
            raise Damage("string is not UTF-8: %s" % error)

    def option(self, read):
        tag = self.byte()
        if tag == 0:
            return None
        if tag == 1:
            return read()
        raise Damage("option tag %d" % tag)

    def cpr(self):
        """A CPR: ten ASCII digits (V1), or the 38 bytes of a sealed one (V2)."""
        length = self.u64()
        data = self.raw(length)
        if length == SEALED_CPR_LEN:
            return data
        if length == 10 and data.isdigit():
            return data.decode("ascii")
        raise Damage("a CPR field of %d bytes" % length)

    def date(self):
        days = self.i32()
        try:
            return datetime.date.fromordinal(days)
        except (ValueError, OverflowError):
            raise Damage("day number %d is out of range" % days)

    def end(self):
        if self.at != len(self.data):
            raise Damage("%d byte(s) left after the event" % (len(self.data) - self.at))


def load_kommuner():
    """The 98 kommunekoder from data/kommuner.csv beside this tool in the repository."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data",
                        "kommuner.csv")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()[1:]
    return {int(line.split(",")[0]) for line in lines if line.strip()}


KOMMUNER = load_kommuner()


def kommune(reader):
    number = reader.u16()
    if number not in KOMMUNER:
        raise Damage("kommune %d is not one of the 98 in data/kommuner.csv" % number)
    return number


def decode(payload):
    """The event in a payload as (type name, dict of fields)."""
    return decode_with_envelope(payload)[:2]


def decode_with_envelope(payload):
    """The event in a payload as (type name, dict of fields, envelope index)."""
    r = Reader(payload)
    envelope = r.u32()
    if envelope not in SCHEMA_VERSIONS:
        raise Damage("envelope variant %d (V1 = 0 and V2 = 1 exist)" % envelope)
    index = r.u32()
    if index >= len(EVENT_TYPES):
        raise Damage("event variant %d does not exist" % index)
    name = EVENT_TYPES[index]
    if name == "AgreementRegistered":
        event = dict(agreement=r.string(), kommune=kommune(r), cpr=r.cpr(),
                     valid_from=r.date(), valid_to=r.option(r.date))
    elif name == "AgreementEnded":
        event = dict(agreement=r.string(), kommune=kommune(r), valid_to=r.date())
    elif name == "WithholdingRecorded":
        event = dict(reference=r.string(), agreement=r.string(), kommune=kommune(r),
                     cpr=r.cpr(), payout_date=r.date(), period_from=r.date(),
                     period_to=r.date(), amount=r.i64())
    elif name == "WithholdingCorrected":
        event = dict(reference=r.string(), corrects=r.string(), kommune=kommune(r),
                     amount=r.i64(), reason=r.string())
    elif name == "FileExported":
        event = dict(file_id=r.raw(16), kommune=kommune(r), sequence=r.u32(),
                     file_name=r.string(), created_at_us=r.i64(),
                     previous_cutoff_position=r.u64(), cutoff_position=r.u64(),
                     test_marker=r.boolean(), record_count=r.u64(), plus_ore=r.i64(),
                     minus_ore=r.i64(), sha256=r.raw(32))
    elif name == "FileReissued":
        event = dict(kommune=kommune(r), sequence=r.u32(), delivery_id=r.raw(16))
    elif name == "FileUploaded":
        event = dict(kommune=kommune(r), sequence=r.u32(), remote_path=r.string(),
                     size_bytes=r.u64(), senders_file_id=r.raw(16), attempt=r.u32())
    elif name == "ReceiptReceived":
        event = dict(kommune=kommune(r), sequence=r.u32(), senders_file_id=r.raw(16),
                     file_transfer_uuid=r.string(), accepted=r.boolean())
        errors = []
        for _ in range(r.u64()):
            errors.append((r.string(), r.string(), r.string()))
        event["errors"] = errors
    elif name == "TechnicalReceiptReceived":
        event = dict(kommune=kommune(r), sequence=r.u32(), senders_file_id=r.raw(16),
                     receipt_named_senders_file_id=r.boolean(),
                     file_transfer_uuid=r.string(), accepted=r.boolean())
        errors = []
        for _ in range(r.u64()):
            errors.append((r.i32(), r.string(), r.string()))
        event["errors"] = errors
        event["receipt_sha256"] = r.raw(32)
        event["archive_name"] = r.string()
    elif name == "RetentionApplied":
        event = dict(agreements=[r.string() for _ in range(r.u64())])
        event["files"] = [dict(kommune=kommune(r), sequence=r.u32()) for _ in range(r.u64())]
        event["as_of"] = r.date()
        event["retention_years"] = r.u32()
    elif name == "LedgerSealed":
        event = dict(source_head_position=r.u64(), source_head_hash=r.raw(32),
                     sealed_events=r.u64())
    elif name == "LossAccepted":
        event = dict(lost_position=r.u64(), lost_hash=r.raw(32),
                     database_head_position=r.u64(), node=r.string(),
                     files=[r.string() for _ in range(r.u64())])
    else:  # BusinessReceiptReceived
        event = dict(kommune=kommune(r), sequence=r.u32(), senders_file_id=r.raw(16),
                     file_transfer_uuid=r.string(), recipient=r.string())
        acceptance = r.u32()
        if acceptance >= len(ACCEPTANCES):
            raise Damage("business receipt acceptance %d does not exist" % acceptance)
        event["acceptance"] = ACCEPTANCES[acceptance]
        event["reason"] = r.option(r.string)
        event["receipt_sha256"] = r.raw(32)
        event["archive_name"] = r.string()
    r.end()
    sealed = isinstance(event.get("cpr"), bytes)
    if envelope == 0 and sealed:
        raise Damage("a V1 payload holds a sealed CPR (only V2 may)")
    if envelope == 1 and not sealed:
        raise Damage("a V2 payload must hold a sealed CPR, and this one holds none")
    return name, event, envelope


def stream_of(name, event):
    if name == "RetentionApplied":
        return "retention"
    if name in ("LedgerSealed", "LossAccepted"):
        return "ledger"
    if name.startswith("Agreement"):
        return "agreement/%s" % event["agreement"]
    if name.startswith("Withholding"):
        return "entry/%04d/%s" % (event["kommune"], event["reference"])
    return "file/%04d/%06d" % (event["kommune"], event["sequence"])


# ---------------------------------------------------------------- sealed CPRs

# ChaCha20-Poly1305 (RFC 8439) and HKDF-SHA256 (RFC 5869), as docs/log-format.md
# ("Personal data: sealed CPRs") uses them: opening only.


def _rotl(value, count):
    return ((value << count) & 0xFFFFFFFF) | (value >> (32 - count))


def _quarter(state, a, b, c, d):
    for x, y, z, count in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
        state[x] = (state[x] + state[y]) & 0xFFFFFFFF
        state[z] = _rotl(state[z] ^ state[x], count)


def chacha20_block(key, counter, nonce):
    state = ([0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + list(struct.unpack("<8L", key))
             + [counter] + list(struct.unpack("<3L", nonce)))
    working = list(state)
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                           (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
            _quarter(working, a, b, c, d)
    return struct.pack("<16L", *[(x + y) & 0xFFFFFFFF for x, y in zip(working, state)])


def poly1305(key, message):
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    accumulator = 0
    for start in range(0, len(message), 16):
        block = int.from_bytes(message[start:start + 16] + b"\x01", "little")
        accumulator = (accumulator + block) * r % p
    return ((accumulator + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def aead_open(key, sealed, aad):
    """nonce (12) || ciphertext || tag (16) opened under key; None if it does not authenticate."""
    if len(sealed) < 28:
        return None
    nonce, ciphertext, tag = sealed[:12], sealed[12:-16], sealed[-16:]

    def padded(data):
        return data + bytes(-len(data) % 16)

    mac = poly1305(chacha20_block(key, 0, nonce)[:32],
                   padded(aad) + padded(ciphertext) + struct.pack("<QQ", len(aad), len(ciphertext)))
    if not hmac.compare_digest(mac, tag):
        return None
    stream = b"".join(chacha20_block(key, 1 + index, nonce)
                      for index in range((len(ciphertext) + 63) // 64))
    return bytes(x ^ y for x, y in zip(ciphertext, stream))


def hkdf32(secret, label):
    prk = hmac.new(b"sf2520 key file v1", secret, hashlib.sha256).digest()
    return hmac.new(prk, label + b"\x01", hashlib.sha256).digest()


def read_key_file(path):
    """The 32-byte secret of a key file: `sf2520-kek-v1:` and 64 hex digits."""
    with open(path, encoding="ascii") as handle:
        line = handle.read(200).rstrip("\n")
    prefix = "sf2520-kek-v1:"
    if not line.startswith(prefix) or len(line) != len(prefix) + 64:
        raise ValueError("%s is not an sf2520 key file" % path)
    return bytes.fromhex(line[len(prefix):])


def key_file_id(secret):
    return struct.unpack(">q", hkdf32(secret, b"sf2520 key file id v1")[:8])[0]


class Keys:
    """Opens the sealed CPRs of one ledger with its key file."""

    def __init__(self, secret, conn):
        self.kek = hkdf32(secret, b"sf2520 wrap data keys v1")
        self.conn = conn
        self.data_keys = {}

    def data_key(self, agreement):
        """The agreement's data key, or None if retention erased it."""
        if agreement not in self.data_keys:
            row = self.conn.execute("SELECT wrapped FROM subject_keys WHERE agreement = ?",
                                    (agreement,)).fetchone()
            if row is None:
                raise Damage("agreement %s has no data key in subject_keys" % agreement)
            wrapped = row[0]
            key = None
            if wrapped is not None:
                key = aead_open(self.kek, wrapped, b"sf2520 data key v1\0" + agreement.encode())
                if key is None:
                    raise Damage("the data key of agreement %s does not open under the key file"
                                 % agreement)
            self.data_keys[agreement] = key
        return self.data_keys[agreement]

    def open(self, agreement, sealed):
        key = self.data_key(agreement)
        if key is None:
            return None
        digits = aead_open(key, sealed, b"sf2520 cpr v1\0" + agreement.encode())
        if digits is None or not digits.isdigit() or len(digits) != 10:
            raise Damage("a CPR sealed for agreement %s does not open" % agreement)
        return digits.decode("ascii")


# ---------------------------------------------------------------- the chain


def chain_hash(previous, position, event_id, stream, event_type, schema_version,
               recorded_at_us, payload):
    stream = stream.encode("utf-8")
    event_type = event_type.encode("utf-8")
    data = b"".join([
        previous,
        struct.pack(">Q", position),
        event_id,
        struct.pack(">Q", len(stream)), stream,
        struct.pack(">Q", len(event_type)), event_type,
        struct.pack(">H", schema_version),
        struct.pack(">q", recorded_at_us),
        struct.pack(">Q", len(payload)), payload,
    ])
    return hashlib.sha256(data).digest()


class Audit:
    def __init__(self):
        self.problems = []
        self.events = 0
        self.head = (0, GENESIS)
        # position -> hash, for the expected heads.
        self.hashes = {}
        # kommune -> [(position, event type, event)] of its entries, in log order.
        self.entries = {}
        # (kommune, reference) -> withholding event.
        self.withholdings = {}
        # [(position, event)] of every FileExported.
        self.files = []
        # (kommune, sequence) of files whose outbox copies retention removed.
        self.retired = set()
        # Files not re-rendered, and why (no damage): [(label, reason)].
        self.unrendered = []
        # Opens sealed CPRs, if the key file was given.
        self.keys = None

    def damaged(self, text):
        self.problems.append(text)

    def walk(self, conn):
        previous = GENESIS
        previous_time = None
        expected = 1
        rows = conn.execute(
            "SELECT position, event_id, stream, event_type, schema_version, recorded_at_us,"
            " payload, hash FROM events ORDER BY position")
        for position, event_id, stream, event_type, schema_version, recorded_at_us, payload, \
                stored_hash in rows:
            where = "position %d" % position
            if position != expected:
                self.damaged("%s: expected position %d (a gap in the log: events were deleted)"
                             % (where, expected))
                return
            expected += 1
            if not (isinstance(event_id, bytes) and len(event_id) == 16):
                self.damaged("%s: event_id is not 16 bytes" % where)
                return
            if not (isinstance(payload, bytes) and isinstance(stored_hash, bytes)
                    and len(stored_hash) == 32):
                self.damaged("%s: payload or hash of the wrong type" % where)
                return
            computed = chain_hash(previous, position, event_id, stream, event_type,
                                  schema_version, recorded_at_us, payload)
            if computed != stored_hash:
                self.damaged("%s: hash chain broken: the event or the one before it was altered"
                             % where)
                return
            if previous_time is not None and recorded_at_us < previous_time:
                self.damaged("%s: recorded-at goes back in time" % where)
                return
            try:
                name, event, envelope = decode_with_envelope(payload)
            except Damage as error:
                self.damaged("%s: payload does not decode: %s" % (where, error))
                return
            if schema_version != SCHEMA_VERSIONS[envelope]:
                self.damaged("%s: schema version %d, but the payload's envelope is of version %d"
                             % (where, schema_version, SCHEMA_VERSIONS[envelope]))
                return
            if name != event_type:
                self.damaged("%s: event_type %s but the payload is a %s" % (where, event_type, name))
                return
            if stream != stream_of(name, event):
                self.damaged("%s: stream %r but the payload says %r"
                             % (where, stream, stream_of(name, event)))
                return
            self.record(position, name, event)
            previous = stored_hash
            previous_time = recorded_at_us
            self.hashes[position] = stored_hash
            self.events = position
            self.head = (position, stored_hash)

    def record(self, position, name, event):
        if name in ("WithholdingRecorded", "WithholdingCorrected"):
            self.entries.setdefault(event["kommune"], []).append((position, name, event))
            if name == "WithholdingRecorded":
                self.withholdings[(event["kommune"], event["reference"])] = event
        elif name == "FileExported":
            self.files.append((position, event))
        elif name == "RetentionApplied":
            self.retired.update((f["kommune"], f["sequence"]) for f in event["files"])


# ---------------------------------------------------------------- projections


def check_files_projection(audit, conn):
    expected = {}
    for position, f in audit.files:
        expected[(f["kommune"], f["sequence"])] = (
            position, f["file_id"], f["file_name"], f["created_at_us"],
            f["previous_cutoff_position"], f["cutoff_position"], int(f["test_marker"]),
            f["record_count"], f["plus_ore"], f["minus_ore"], f["sha256"])
    found = {}
    for row in conn.execute(
            "SELECT kommune, sequence, position, file_id, file_name, created_at_us,"
            " previous_cutoff_position, cutoff_position, test_marker, record_count, plus_ore,"
            " minus_ore, sha256 FROM files"):
        found[(row[0], row[1])] = tuple(row[2:])
    for key in sorted(set(expected) | set(found)):
        if expected.get(key) != found.get(key):
            position = expected[key][0] if key in expected else found[key][0]
            self_what = ("has no row" if key not in found else
                         "has a row with no FileExported event" if key not in expected else
                         "row differs from its FileExported event")
            audit.damaged("damaged projection at position %d: files table %s (kommune %04d,"
                          " løbenummer %d)" % (position, self_what, key[0], key[1]))


def check_entries_projection(audit, conn):
    expected = {}
    for kommune_number, entries in audit.entries.items():
        net = {}
        for position, name, e in entries:
            if name == "WithholdingRecorded":
                net[e["reference"]] = e["amount"]
            else:
                net[e["corrects"]] = net.get(e["corrects"], 0) + e["amount"]
        for position, name, e in entries:
            if name == "WithholdingRecorded":
                expected[(kommune_number, position)] = (
                    e["reference"], 1, e["agreement"], None, e["amount"], net[e["reference"]],
                    e["payout_date"].toordinal())
            else:
                original = audit.withholdings.get((kommune_number, e["corrects"]))
                expected[(kommune_number, position)] = (
                    e["reference"], 2, original["agreement"] if original else None,
                    e["corrects"], e["amount"], None, None)
    found = {}
    for row in conn.execute(
            "SELECT kommune, position, reference, kind, agreement, corrects, amount_ore,"
            " net_ore, payout FROM entries"):
        found[(row[0], row[1])] = tuple(row[2:])
    for key in sorted(set(expected) | set(found)):
        if expected.get(key) != found.get(key):
            audit.damaged("damaged projection at position %d: entries table %s (kommune %04d)"
                          % (key[1], "has no row" if key not in found else
                             "has a row with no entry event" if key not in expected else
                             "row differs from its event", key[0]))


# ---------------------------------------------------------------- SF2520


def n_field(value, width, what):
    text = "%d" % value
    if value < 0 or len(text) > width:
        raise Damage("%s %d does not fit %d digits" % (what, value, width))
    return text.rjust(width, "0")


def x_field(text, width, what):
    if len(text) > width:
        raise Damage("%s %r does not fit %d characters" % (what, text, width))
    return text.ljust(width, " ")


def ymd(date):
    return "%04d%02d%02d" % (date.year, date.month, date.day)


def record(text):
    if len(text) != 128:
        raise Damage("a record of %d characters" % len(text))
    try:
        return text.encode("iso-8859-1") + b"\r\n"
    except UnicodeEncodeError:
        raise Damage("a character outside ISO-8859-1 in %r" % text)


def render(audit, f):
    """The bytes of the official file of FileExported `f`, from the log."""
    kommune_number = f["kommune"]
    created = datetime.datetime(1970, 1, 1) + datetime.timedelta(
        microseconds=f["created_at_us"])
    if created.microsecond:
        raise Damage("created_at_us %d is not whole seconds" % f["created_at_us"])
    start = ("000" + "SF2520" + "031" + n_field(kommune_number, 4, "kommune")
             + n_field(f["sequence"], 6, "løbenummer") + ymd(created)
             + created.strftime("%H%M%S") + ymd(created) + created.strftime("%H%M%S")
             + ("T" if f["test_marker"] else " ") + " " * 77)
    out = [record(start)]
    plus = minus = count = 0
    # Why the bytes cannot be rebuilt here, if they cannot; the count and sums can.
    unrenderable = None
    low, high = f["previous_cutoff_position"], f["cutoff_position"]
    for position, name, e in audit.entries.get(kommune_number, []):
        if not low < position <= high:
            continue
        if name == "WithholdingRecorded":
            base, code, corrects = e, "01", ""
        else:
            base = audit.withholdings.get((kommune_number, e["corrects"]))
            if base is None:
                raise Damage("the correction at position %d corrects %s, which is no withholding"
                             " of kommune %04d" % (position, e["corrects"], kommune_number))
            code, corrects = "02", e["corrects"]
        cpr = base["cpr"]
        if isinstance(cpr, bytes):
            cpr = None if audit.keys is None else audit.keys.open(base["agreement"], cpr)
            if cpr is None:
                unrenderable = unrenderable or (
                    "its CPRs are sealed (give --key-file)" if audit.keys is None else
                    "it holds agreement %s, whose personal data was erased under retention"
                    % base["agreement"])
                cpr = "0" * 10
        count += 1
        amount = e["amount"]
        if amount >= 0:
            plus += amount
        else:
            minus -= amount
        detail = ("010" + n_field(count, 7, "record number") + n_field(kommune_number, 4, "kommune")
                  + x_field(cpr, 10, "CPR") + x_field(base["agreement"], 15, "agreement")
                  + code + ymd(base["payout_date"]) + ymd(base["period_from"])
                  + ymd(base["period_to"]) + ("+" if amount >= 0 else "-")
                  + n_field(abs(amount), 13, "amount") + x_field(e["reference"], 20, "reference")
                  + x_field(corrects, 20, "corrected reference") + " " * 9)
        out.append(record(detail))
    net = plus - minus
    end = ("999" + n_field(kommune_number, 4, "kommune") + n_field(f["sequence"], 6, "løbenummer")
           + n_field(count, 7, "count") + n_field(plus, 15, "plus sum")
           + n_field(minus, 15, "minus sum") + ("+" if net >= 0 else "-")
           + n_field(abs(net), 15, "net sum") + " " * 62)
    out.append(record(end))
    return (None if unrenderable else b"".join(out)), count, plus, minus, unrenderable


def check_files(audit, outbox):
    last = {}
    for position, f in audit.files:
        label = "kommune %04d løbenummer %d (FileExported at position %d)" % (
            f["kommune"], f["sequence"], position)
        previous_sequence, previous_cutoff = last.get(f["kommune"], (0, 0))
        if f["sequence"] != previous_sequence + 1:
            audit.damaged("%s: løbenummer follows %d" % (label, previous_sequence))
        if f["previous_cutoff_position"] != previous_cutoff:
            audit.damaged("%s: starts after position %d, but the previous file ended at %d"
                          % (label, f["previous_cutoff_position"], previous_cutoff))
        if f["cutoff_position"] >= position:
            audit.damaged("%s: its cut-off %d is not before the event"
                          % (label, f["cutoff_position"]))
        last[f["kommune"]] = (f["sequence"], f["cutoff_position"])
        try:
            data, count, plus, minus, unrenderable = render(audit, f)
        except Damage as error:
            audit.damaged("%s: cannot be rendered: %s" % (label, error))
            continue
        digest = f["sha256"] if data is None else hashlib.sha256(data).digest()
        if unrenderable:
            audit.unrendered.append((label, unrenderable))
        if digest != f["sha256"]:
            audit.damaged("%s: rendered from the log its SHA-256 is %s, the event recorded %s"
                          % (label, digest.hex(), f["sha256"].hex()))
        if (count, plus, minus) != (f["record_count"], f["plus_ore"], f["minus_ore"]):
            audit.damaged("%s: the event's count and sums differ from the entries" % label)
        if outbox is None or (f["kommune"], f["sequence"]) in audit.retired:
            continue
        path = os.path.join(outbox, f["file_name"])
        try:
            with open(path, "rb") as handle:
                on_disk = hashlib.sha256(handle.read()).digest()
        except FileNotFoundError:
            audit.damaged("outbox: %s: %s is missing" % (label, path))
            continue
        if on_disk != f["sha256"]:
            audit.damaged("outbox: %s: %s was edited: its SHA-256 is %s, the event recorded %s"
                          % (label, path, on_disk.hex(), f["sha256"].hex()))


# ---------------------------------------------------------------- ed25519

# Signature verification as in RFC 8032, section 6 (the reference code), for the
# signed checkpoints of docs/log-format.md.
ED_P = 2 ** 255 - 19
ED_Q = 2 ** 252 + 27742317777372353535851937790883648493
ED_D = -121665 * pow(121666, ED_P - 2, ED_P) % ED_P
ED_I = pow(2, (ED_P - 1) // 4, ED_P)


def ed_recover_x(y, sign):
    if y >= ED_P:
        return None
    x2 = (y * y - 1) * pow(ED_D * y * y + 1, ED_P - 2, ED_P)
    if x2 % ED_P == 0:
        return None if sign else 0
    x = pow(x2, (ED_P + 3) // 8, ED_P)
    if (x * x - x2) % ED_P != 0:
        x = x * ED_I % ED_P
    if (x * x - x2) % ED_P != 0:
        return None
    if (x & 1) != sign:
        x = ED_P - x
    return x


def ed_add(a, b):
    e1 = (a[1] - a[0]) * (b[1] - b[0]) % ED_P
    e2 = (a[1] + a[0]) * (b[1] + b[0]) % ED_P
    c = 2 * a[3] * b[3] * ED_D % ED_P
    d = 2 * a[2] * b[2] % ED_P
    e, f, g, h = e2 - e1, d - c, d + c, e2 + e1
    return (e * f, g * h, f * g, e * h)


def ed_mul(scalar, point):
    result = (0, 1, 1, 0)
    while scalar > 0:
        if scalar & 1:
            result = ed_add(result, point)
        point = ed_add(point, point)
        scalar >>= 1
    return result


def ed_decompress(data):
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = ed_recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % ED_P)


ED_GY = 4 * pow(5, ED_P - 2, ED_P) % ED_P
ED_GX = ed_recover_x(ED_GY, 0)
ED_G = (ED_GX, ED_GY, 1, ED_GX * ED_GY % ED_P)


def ed25519_verify(public, message, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    a = ed_decompress(public)
    r = ed_decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= ED_Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % ED_Q
    left = ed_mul(s, ED_G)
    right = ed_add(r, ed_mul(h, a))
    return ((left[0] * right[2] - right[0] * left[2]) % ED_P == 0
            and (left[1] * right[2] - right[1] * left[2]) % ED_P == 0)


def read_checkpoint(path, public_key):
    """The head a checkpoint vouches for, after checking its signature."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    lines = text.split("\n")
    if len(lines) != 6 or lines[5] != "" or lines[0] != "sf2520-checkpoint v1" \
            or not lines[1].startswith("head ") or not lines[2].startswith("made ") \
            or not lines[3].startswith("public-key ") or not lines[4].startswith("signature "):
        raise ValueError("%s is not an sf2520 checkpoint (five lines, see docs/log-format.md)" % path)
    signature = bytes.fromhex(lines[4][len("signature "):])
    signed = ("\n".join(lines[:3]) + "\n").encode("utf-8")
    if not ed25519_verify(public_key, signed, signature):
        raise ValueError("%s: the signature does not verify with public key %s"
                         % (path, public_key.hex()))
    return parse_head(lines[1][len("head "):])


# ---------------------------------------------------------------- heads


def parse_head(text):
    position, sep, digest = text.strip().partition(":")
    if not sep or not position.isdigit() or len(digest) != 64:
        raise ValueError("%r is not POSITION:HASH (64 hex digits)" % text)
    return int(position), bytes.fromhex(digest)


def check_heads(audit, heads):
    for position, digest in heads:
        anchor = "%d:%s" % (position, digest.hex())
        if position > audit.events:
            audit.damaged("expected head %s: the log (as verified) ends at position %d, shorter"
                          " than position %d: events were removed or an older backup restored"
                          % (anchor, audit.events, position))
        elif (GENESIS if position == 0 else audit.hashes[position]) != digest:
            audit.damaged("expected head %s: the hash at position %d is %s: the history was"
                          " rewritten" % (anchor, position, audit.hashes[position].hex()))


def stored_form(value):
    """A decoded value as serde_json prints the stored one (docs/log-format.md vectors)."""
    if isinstance(value, datetime.date):
        return value.toordinal()
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, tuple):
        return dict(zip(("code", "code_description", "description"), value))
    if isinstance(value, list):
        return [stored_form(item) for item in value]
    return value


def check_vectors(path):
    """Decodes every payload vector of the document and compares it with the JSON
    beside it; checks each chain vector's hash input against its hash and that it
    ends with the payload of that position's event. Returns the problems found."""
    import json
    import re
    text = open(path, encoding="utf-8").read()
    problems = []
    payloads = []
    pattern = re.compile(r"#### (\w+) \(variant (\d+)\)\n\nstream `([^`]*)`\n\n```json\n(.*?)\n```"
                         r"\n\n```text\n(.*?)\n```", re.S)
    for name, index, stream, expected, hex_text in pattern.findall(text):
        payload = bytes.fromhex(hex_text.replace("\n", " "))
        payloads.append(payload)
        try:
            decoded_name, event = decode(payload)
        except Damage as error:
            problems.append("%s: %s" % (name, error))
            continue
        fields = {key: stored_form(value) for key, value in event.items()}
        if decoded_name != name or EVENT_TYPES.index(name) != int(index):
            problems.append("%s: decoded as %s" % (name, decoded_name))
        if {name: fields} != json.loads(expected):
            problems.append("%s: decoded %r, the document says %s" % (name, fields, expected))
        if stream_of(decoded_name, event) != stream:
            problems.append("%s: stream %s" % (name, stream_of(decoded_name, event)))
    if len(payloads) != len(EVENT_TYPES):
        problems.append("%d payload vectors for %d event types" % (len(payloads), len(EVENT_TYPES)))
    chain = re.compile(r"#### position (\d+): (\w+)\n\n```text\n(.*?)\n```\n\nhash `([0-9a-f]{64})`", re.S)
    previous = GENESIS
    vectors = chain.findall(text)
    for position, name, hex_text, digest in vectors:
        data = bytes.fromhex(hex_text.replace("\n", " "))
        payload = payloads[int(position) - 1]
        if hashlib.sha256(data).hexdigest() != digest:
            problems.append("chain position %s: the input does not hash to the hash" % position)
        if not data.startswith(previous) or not data.endswith(struct.pack(">Q", len(payload)) + payload):
            problems.append("chain position %s: not previous hash ... payload" % position)
        previous = bytes.fromhex(digest)
    if not vectors:
        problems.append("no chain vectors")
    problems.extend(check_sealed_vectors(text))
    return problems


def check_sealed_vectors(text):
    """Opens the document's sealed vectors with this tool's ChaCha20-Poly1305: the key
    file's id, the wrapped data key and each V2 payload's CPR."""
    import re
    problems = []
    found = re.search(r"```text\n(sf2520-kek-v1:[0-9a-f]{64})\nkey_file_id (-?\d+)\n```\n\n"
                      r"wrapped\n\n```text\n(.*?)\n```", text, re.S)
    if not found:
        return ["no sealed vectors"]
    secret = bytes.fromhex(found.group(1).split(":")[1])
    if key_file_id(secret) != int(found.group(2)):
        problems.append("sealed: the key file's id is not %s" % found.group(2))
    wrapped = bytes.fromhex(found.group(3).replace("\n", " "))
    data_key = aead_open(hkdf32(secret, b"sf2520 wrap data keys v1"), wrapped,
                         b"sf2520 data key v1\0BA000123456")
    if data_key != bytes(range(0x20, 0x40)):
        return problems + ["sealed: the wrapped data key does not open to 20 21 ... 3f"]
    payloads = re.findall(r"#### (\w+) \(V2\)\n\n```text\n(.*?)\n```", text, re.S)
    for name, hex_text in payloads:
        try:
            decoded, event, envelope = decode_with_envelope(bytes.fromhex(hex_text.replace("\n", " ")))
        except Damage as error:
            problems.append("sealed %s: %s" % (name, error))
            continue
        cpr = aead_open(data_key, event["cpr"], b"sf2520 cpr v1\0" + event["agreement"].encode())
        if decoded != name or envelope != 1 or cpr != b"0101901234":
            problems.append("sealed %s: opens to %r" % (name, cpr))
    if len(payloads) != 2:
        problems.append("%d sealed payload vectors, not 2" % len(payloads))
    return problems


def main(argv):
    if argv[:1] == ["--check-vectors"]:
        problems = check_vectors(argv[1])
        for problem in problems:
            print("MISMATCH: %s" % problem)
        if not problems:
            print("ok: every vector of %s decodes as documented" % argv[1])
        return 1 if problems else 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ledger", help="the data directory or its ledger.sqlite3")
    parser.add_argument("--outbox", help="the outbox (default: DATA_DIR/outbox if it exists)")
    parser.add_argument("--no-outbox", action="store_true", help="do not check an outbox")
    parser.add_argument("--key-file", metavar="FILE",
                        help="the ledger's key file, to open sealed CPRs (default: "
                             "DATA_DIR/ledger.kek if it exists)")
    parser.add_argument("--expect-head", action="append", default=[], metavar="POS:HASH")
    parser.add_argument("--expect-heads", action="append", default=[], metavar="FILE")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                        help="a signed checkpoint whose head the log must hold")
    parser.add_argument("--public-key", metavar="HEX",
                        help="the ed25519 public key you trust to sign checkpoints")
    args = parser.parse_args(argv)
    path = args.ledger
    data_dir = path
    if os.path.isdir(path):
        path = os.path.join(path, "ledger.sqlite3")
    else:
        data_dir = os.path.dirname(path)
    try:
        heads = [parse_head(text) for text in args.expect_head]
        for name in args.expect_heads:
            with open(name, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    line = line.strip()
                    if line and not line.startswith("#"):
                        try:
                            heads.append(parse_head(line.split()[0]))
                        except ValueError as error:
                            raise ValueError("%s:%d: %s" % (name, number, error))
        if args.checkpoint and not args.public_key:
            raise ValueError("--checkpoint needs --public-key HEX (the key you trust)")
        for name in args.checkpoint:
            heads.append(read_checkpoint(name, bytes.fromhex(args.public_key)))
    except (OSError, ValueError) as error:
        print("error: %s" % error, file=sys.stderr)
        return 2
    outbox = None
    if args.outbox:
        outbox = args.outbox
    elif not args.no_outbox and os.path.isdir(os.path.join(data_dir, "outbox")):
        outbox = os.path.join(data_dir, "outbox")
    if not os.path.isfile(path):
        print("error: %s is not a ledger file" % path, file=sys.stderr)
        return 2
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    audit = Audit()
    try:
        audit.keys = load_keys(conn, args.key_file, data_dir)
    except (OSError, ValueError) as error:
        print("error: %s" % error, file=sys.stderr)
        return 2
    audit.walk(conn)
    if not audit.problems:
        check_files_projection(audit, conn)
        check_entries_projection(audit, conn)
        check_files(audit, outbox)
    check_heads(audit, heads)
    conn.close()
    for problem in audit.problems:
        print("DAMAGED: %s" % problem)
    if audit.problems:
        return 1
    print("ok: %d event(s), hash chain intact, every payload decodes; %d official file(s) rebuilt"
          " from the log with the SHA-256 of their FileExported event%s; %d expected head(s) held"
          % (audit.events, len(audit.files) - len(audit.unrendered),
             " and equal to the outbox %s" % outbox if outbox else "", len(heads)))
    for label, reason in audit.unrendered:
        print("note: %s: count and sums checked, SHA-256 not rebuilt: %s" % (label, reason))
    print("head: %d:%s" % (audit.head[0], audit.head[1].hex()))
    return 0


def load_keys(conn, named, data_dir):
    """The ledger's keys, if it seals CPRs and its key file is given or beside it."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'key_file_id'").fetchone()
    if row is None:
        return None
    path = named or os.path.join(data_dir, "ledger.kek")
    if not named and not os.path.isfile(path):
        return None
    secret = read_key_file(path)
    if key_file_id(secret) != row[0]:
        raise ValueError("%s is not this ledger's key file (id %d, the ledger's is %d)"
                         % (path, key_file_id(secret), row[0]))
    return Keys(secret, conn)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
