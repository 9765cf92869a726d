//! TCG PC Client firmware event logs: the legacy SHA-1 format (`TCG_PCR_EVENT` only) and the
//! crypto-agile format (a `Spec ID Event03` header, then `TCG_PCR_EVENT2`), parsed strictly and
//! replayed to PCR values.
//!
//! An event log is untrusted: it means something only when its replay reproduces PCR values a
//! verified quote covers ([`EventLog::check_against`]). Event logs are little-endian.

use std::collections::BTreeMap;

use super::alg::HashAlg;
use super::pcr::PcrBanks;
use super::wire::{ParseError, Reader};

/// Most events accepted in one log.
pub const MAX_EVENTS: usize = 65_536;
/// Largest event data accepted.
pub const MAX_EVENT_DATA: usize = 1 << 20;
/// Highest PCR a firmware event may extend.
const MAX_PCR: u32 = 23;

const EV_NO_ACTION: u32 = 0x0000_0003;
const EV_SEPARATOR: u32 = 0x0000_0004;
const EV_ACTION: u32 = 0x0000_0005;
const EV_EFI_ACTION: u32 = 0x8000_0007;

/// Event types of the TCG PC Client Platform Firmware Profile (and the EV_EVENT_TAG events
/// Windows logs carry). Anything else is refused.
const KNOWN_EVENT_TYPES: [u32; 39] = [
    0x0000_0000, // EV_PREBOOT_CERT
    0x0000_0001, // EV_POST_CODE
    0x0000_0002, // EV_UNUSED
    EV_NO_ACTION,
    EV_SEPARATOR,
    EV_ACTION,
    0x0000_0006, // EV_EVENT_TAG
    0x0000_0007, // EV_S_CRTM_CONTENTS
    0x0000_0008, // EV_S_CRTM_VERSION
    0x0000_0009, // EV_CPU_MICROCODE
    0x0000_000A, // EV_PLATFORM_CONFIG_FLAGS
    0x0000_000B, // EV_TABLE_OF_DEVICES
    0x0000_000C, // EV_COMPACT_HASH
    0x0000_000D, // EV_IPL
    0x0000_000E, // EV_IPL_PARTITION_DATA
    0x0000_000F, // EV_NONHOST_CODE
    0x0000_0010, // EV_NONHOST_CONFIG
    0x0000_0011, // EV_NONHOST_INFO
    0x0000_0012, // EV_OMIT_BOOT_DEVICE_EVENTS
    0x0000_0013, // EV_POST_CODE2
    0x8000_0000, // EV_EFI_EVENT_BASE
    0x8000_0001, // EV_EFI_VARIABLE_DRIVER_CONFIG
    0x8000_0002, // EV_EFI_VARIABLE_BOOT
    0x8000_0003, // EV_EFI_BOOT_SERVICES_APPLICATION
    0x8000_0004, // EV_EFI_BOOT_SERVICES_DRIVER
    0x8000_0005, // EV_EFI_RUNTIME_SERVICES_DRIVER
    0x8000_0006, // EV_EFI_GPT_EVENT
    EV_EFI_ACTION,
    0x8000_0008, // EV_EFI_PLATFORM_FIRMWARE_BLOB
    0x8000_0009, // EV_EFI_HANDOFF_TABLES
    0x8000_000A, // EV_EFI_PLATFORM_FIRMWARE_BLOB2
    0x8000_000B, // EV_EFI_HANDOFF_TABLES2
    0x8000_000C, // EV_EFI_VARIABLE_BOOT2
    0x8000_0010, // EV_EFI_HCRTM_EVENT
    0x8000_00E0, // EV_EFI_VARIABLE_AUTHORITY
    0x8000_00E1, // EV_EFI_SPDM_FIRMWARE_BLOB
    0x8000_00E2, // EV_EFI_SPDM_FIRMWARE_CONFIG
    0x8000_00E3, // EV_EFI_SPDM_DEVICE_POLICY
    0x8000_00E4, // EV_EFI_SPDM_DEVICE_AUTHORITY
];

/// Why an event log was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    #[error("event log: {0}")]
    Parse(ParseError),
    #[error("event {index}: unknown event type 0x{event_type:08x}")]
    UnknownEventType { index: usize, event_type: u32 },
    #[error("event {index}: PCR {pcr} is not a firmware PCR (0-23)")]
    BadPcr { index: usize, pcr: u32 },
    #[error("event {index}: {reason}")]
    BadEvent { index: usize, reason: String },
    #[error("more than {MAX_EVENTS} events")]
    TooManyEvents,
    #[error("replayed PCR {hash}:{index} is {replayed}, the quote says {quoted}")]
    ReplayMismatch {
        hash: HashAlg,
        index: u8,
        replayed: String,
        quoted: String,
    },
    #[error("the event log has no {0} bank")]
    MissingBank(HashAlg),
}

/// Which of the two TCG formats a log is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventLogFormat {
    /// TCG 1.2 style: every event `TCG_PCR_EVENT` with a SHA-1 digest.
    LegacySha1,
    /// TCG PC Client PFP 2.0: `Spec ID Event03` header, then `TCG_PCR_EVENT2`.
    CryptoAgile,
}

/// One measured event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    pub event_type: u32,
    /// Digests for the supported banks (algorithms this crate cannot compute are skipped).
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    pub data: Vec<u8>,
}

/// A parsed event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    pub format: EventLogFormat,
    /// Banks the log has digests for (supported ones only).
    pub banks: Vec<HashAlg>,
    /// The locality the TPM was started from, from a `StartupLocality` event (H-CRTM), which
    /// sets PCR 0's initial value.
    pub startup_locality: Option<u8>,
    /// Events in order, the `Spec ID` header excluded.
    pub events: Vec<Event>,
}

fn err(p: ParseError) -> EventLogError {
    EventLogError::Parse(p)
}

impl EventLog {
    /// Parses a whole binary event log (`/sys/kernel/security/tpm0/binary_bios_measurements`).
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        let mut r = Reader::new(bytes, "TCG event log");
        // The first event is always a TCG_PCR_EVENT (SHA-1 format).
        let first = read_legacy_event(&mut r)?;
        let agile = first.pcr == 0
            && first.event_type == EV_NO_ACTION
            && first.data.starts_with(b"Spec ID Event03\0");
        let mut log = EventLog {
            format: if agile {
                EventLogFormat::CryptoAgile
            } else {
                EventLogFormat::LegacySha1
            },
            banks: vec![HashAlg::Sha1],
            startup_locality: None,
            events: Vec::new(),
        };
        if agile {
            let sizes = parse_spec_id(&first.data)?;
            log.banks = sizes
                .iter()
                .filter_map(|(a, _)| HashAlg::from_id(*a))
                .collect();
            while r.remaining() > 0 {
                let index = log.events.len() + 1;
                let ev = read_agile_event(&mut r, &sizes, index)?;
                log.push(ev, index)?;
            }
        } else {
            log.push(first, 0)?;
            while r.remaining() > 0 {
                let index = log.events.len();
                let ev = read_legacy_event(&mut r)?;
                log.push(ev, index)?;
            }
        }
        r.finish().map_err(err)?;
        Ok(log)
    }

    fn push(&mut self, ev: Event, index: usize) -> Result<(), EventLogError> {
        if self.events.len() >= MAX_EVENTS {
            return Err(EventLogError::TooManyEvents);
        }
        if !KNOWN_EVENT_TYPES.contains(&ev.event_type) {
            return Err(EventLogError::UnknownEventType {
                index,
                event_type: ev.event_type,
            });
        }
        if ev.pcr > MAX_PCR {
            return Err(EventLogError::BadPcr { index, pcr: ev.pcr });
        }
        match ev.event_type {
            EV_NO_ACTION => {
                if let Some(loc) = ev.data.strip_prefix(b"StartupLocality\0") {
                    let [l] = loc else {
                        return Err(EventLogError::BadEvent {
                            index,
                            reason: "StartupLocality event must carry one byte".into(),
                        });
                    };
                    let pcr0_extended = self
                        .events
                        .iter()
                        .any(|e| e.pcr == 0 && e.event_type != EV_NO_ACTION);
                    if ev.pcr != 0 || pcr0_extended || self.startup_locality.is_some() {
                        return Err(EventLogError::BadEvent {
                            index,
                            reason: "StartupLocality must precede every PCR 0 measurement, once"
                                .into(),
                        });
                    }
                    self.startup_locality = Some(*l);
                }
            }
            // Events whose digest is, by specification, the hash of their data.
            EV_SEPARATOR | EV_ACTION | EV_EFI_ACTION => {
                for (alg, d) in &ev.digests {
                    if alg.digest(&ev.data) != *d {
                        return Err(EventLogError::BadEvent {
                            index,
                            reason: format!("{alg} digest is not the hash of the event data"),
                        });
                    }
                }
            }
            _ => {}
        }
        self.events.push(ev);
        Ok(())
    }

    /// The initial value of PCR `index` in bank `hash`: zeros, all-ones for 17–22 (the
    /// dynamic-launch PCRs), PCR 0 = the startup locality in its last byte.
    pub fn initial_value(&self, hash: HashAlg, index: u8) -> Vec<u8> {
        let mut v = vec![if (17..=22).contains(&index) { 0xff } else { 0 }; hash.size()];
        if index == 0 {
            if let (Some(l), Some(last)) = (self.startup_locality, v.last_mut()) {
                *last = l;
            }
        }
        v
    }

    /// Replays the log: for every bank, the PCRs that at least one event extended.
    pub fn replay(&self) -> PcrBanks {
        let mut out: BTreeMap<HashAlg, BTreeMap<u8, Vec<u8>>> = BTreeMap::new();
        for ev in &self.events {
            if ev.event_type == EV_NO_ACTION {
                continue;
            }
            let Ok(pcr) = u8::try_from(ev.pcr) else {
                continue;
            };
            for (alg, d) in &ev.digests {
                let bank = out.entry(*alg).or_default();
                let cur = bank
                    .remove(&pcr)
                    .unwrap_or_else(|| self.initial_value(*alg, pcr));
                bank.insert(pcr, alg.digest_parts(&[&cur, d]));
            }
        }
        PcrBanks(out)
    }

    /// Checks that replaying the log gives the quoted value of every PCR in `indices` of every
    /// quoted bank (a PCR no event extended must hold its initial value). `quoted` should be a
    /// verified quote's PCRs; PCRs the OS extends after boot without logging here (IMA's 10)
    /// belong outside `indices`.
    pub fn check_against(
        &self,
        quoted: &PcrBanks,
        indices: impl IntoIterator<Item = u8> + Clone,
    ) -> Result<(), EventLogError> {
        let replayed = self.replay();
        for (hash, bank) in &quoted.0 {
            if !self.banks.contains(hash) {
                return Err(EventLogError::MissingBank(*hash));
            }
            for index in indices.clone() {
                let Some(q) = bank.get(&index) else { continue };
                let r = replayed
                    .get(*hash, index)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_else(|| self.initial_value(*hash, index));
                if r != *q {
                    return Err(EventLogError::ReplayMismatch {
                        hash: *hash,
                        index,
                        replayed: hex::encode(r),
                        quoted: hex::encode(q),
                    });
                }
            }
        }
        Ok(())
    }
}

fn read_data(r: &mut Reader<'_>) -> Result<Vec<u8>, EventLogError> {
    let at = r.offset();
    let size = r.u32_le("eventSize").map_err(err)? as usize;
    if size > MAX_EVENT_DATA {
        return Err(err(r.invalid_at(
            at,
            "eventSize",
            format!("{size} exceeds {MAX_EVENT_DATA}"),
        )));
    }
    Ok(r.bytes(size, "event").map_err(err)?.to_vec())
}

fn read_legacy_event(r: &mut Reader<'_>) -> Result<Event, EventLogError> {
    let pcr = r.u32_le("pcrIndex").map_err(err)?;
    let event_type = r.u32_le("eventType").map_err(err)?;
    let digest = r.bytes(20, "digest").map_err(err)?.to_vec();
    let data = read_data(r)?;
    Ok(Event {
        pcr,
        event_type,
        digests: vec![(HashAlg::Sha1, digest)],
        data,
    })
}

/// Parses `TCG_EfiSpecIDEvent`; returns the (algorithm id, digest size) list.
fn parse_spec_id(data: &[u8]) -> Result<Vec<(u16, u16)>, EventLogError> {
    let mut r = Reader::new(data, "TCG_EfiSpecIDEvent");
    r.bytes(16, "signature").map_err(err)?;
    r.u32_le("platformClass").map_err(err)?;
    r.u8("specVersionMinor").map_err(err)?;
    let at = r.offset();
    let major = r.u8("specVersionMajor").map_err(err)?;
    if major != 2 {
        return Err(err(r.invalid_at(
            at,
            "specVersionMajor",
            format!("{major} is not 2"),
        )));
    }
    r.u8("specErrata").map_err(err)?;
    let at = r.offset();
    let uintn = r.u8("uintnSize").map_err(err)?;
    if uintn != 1 && uintn != 2 {
        return Err(err(r.invalid_at(
            at,
            "uintnSize",
            format!("{uintn} is not 1 or 2"),
        )));
    }
    let at = r.offset();
    let n = r.u32_le("numberOfAlgorithms").map_err(err)?;
    if n == 0 || n > 16 {
        return Err(err(r.invalid_at(
            at,
            "numberOfAlgorithms",
            format!("{n} is not 1-16"),
        )));
    }
    let mut sizes: Vec<(u16, u16)> = Vec::new();
    for _ in 0..n {
        let at = r.offset();
        let alg = r.u16_le("digestSizes.algorithmId").map_err(err)?;
        let size = r.u16_le("digestSizes.digestSize").map_err(err)?;
        let bad = sizes.iter().any(|(a, _)| *a == alg)
            || size == 0
            || usize::from(size) > super::alg::MAX_DIGEST
            || HashAlg::from_id(alg).is_some_and(|h| h.size() != usize::from(size));
        if bad {
            return Err(err(r.invalid_at(
                at,
                "digestSizes",
                format!("algorithm 0x{alg:04x} with digest size {size}"),
            )));
        }
        sizes.push((alg, size));
    }
    let vendor = r.u8("vendorInfoSize").map_err(err)?;
    r.bytes(usize::from(vendor), "vendorInfo").map_err(err)?;
    r.finish().map_err(err)?;
    Ok(sizes)
}

fn read_agile_event(
    r: &mut Reader<'_>,
    sizes: &[(u16, u16)],
    index: usize,
) -> Result<Event, EventLogError> {
    let pcr = r.u32_le("pcrIndex").map_err(err)?;
    let event_type = r.u32_le("eventType").map_err(err)?;
    let count = r.u32_le("digests.count").map_err(err)?;
    if count as usize != sizes.len() {
        return Err(EventLogError::BadEvent {
            index,
            reason: format!(
                "{count} digests; the header declares {} algorithms",
                sizes.len()
            ),
        });
    }
    let mut digests = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..count {
        let alg = r.u16_le("digests.hashAlg").map_err(err)?;
        let Some((_, size)) = sizes.iter().find(|(a, _)| *a == alg) else {
            return Err(EventLogError::BadEvent {
                index,
                reason: format!(
                    "digest of algorithm 0x{alg:04x}, which the header does not declare"
                ),
            });
        };
        if seen.contains(&alg) {
            return Err(EventLogError::BadEvent {
                index,
                reason: format!("two digests of algorithm 0x{alg:04x}"),
            });
        }
        seen.push(alg);
        let d = r.bytes(usize::from(*size), "digests.digest").map_err(err)?;
        if let Some(h) = HashAlg::from_id(alg) {
            digests.push((h, d.to_vec()));
        }
    }
    let data = read_data(r)?;
    Ok(Event {
        pcr,
        event_type,
        digests,
        data,
    })
}
