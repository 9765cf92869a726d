//! C2SP `tlog-tiles`: tile paths and entry bundles.
//!
//! A tile at level `L`, index `N`, lists up to 256 hashes of tree level `8·L`, starting at
//! position `N·256`. Full tiles (256 hashes) are immutable; a partial tile of width `W` is named
//! `N.p/W`. Entry bundles (`tile/entries/N`) hold the leaf data of the same 256 leaves, each
//! prefixed with its length as a big-endian u16.

use std::fmt;

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Highest tile level a 64-bit tree can need.
pub const MAX_LEVEL: u8 = 7;

/// Why a tile path or bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("malformed tile path")]
    BadPath,
    #[error("malformed entry bundle")]
    BadBundle,
    #[error("entry of {0} bytes does not fit a bundle (max 65535)")]
    EntryTooLarge(usize),
}

/// What a tile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Hashes at tree level `8·level`.
    Hashes { level: u8 },
    /// Leaf data (an entry bundle).
    Entries,
}

/// A parsed tile coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TilePath {
    pub kind: TileKind,
    pub index: u64,
    /// 1..=256; 256 means a full tile.
    pub width: u16,
}

/// Encodes an index as C2SP path elements: `1234067` → `x001/x234/067`.
pub fn encode_index(n: u64) -> String {
    let mut groups = vec![n % 1000];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(rest % 1000);
        rest /= 1000;
    }
    let mut out = String::new();
    for (i, g) in groups.iter().rev().enumerate() {
        if i + 1 < groups.len() {
            out.push_str(&format!("x{g:03}/"));
        } else {
            out.push_str(&format!("{g:03}"));
        }
    }
    out
}

impl TilePath {
    /// Whether this is a full (immutable) tile.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// Parses the part after `tile/`, e.g. `0/x001/234.p/5` or `entries/000`.
    /// Strict: exactly the encoding [`fmt::Display`] produces, nothing else.
    pub fn parse(rest: &str) -> Result<Self, TileError> {
        if rest.len() > 64 {
            return Err(TileError::BadPath);
        }
        let (first, tail) = rest.split_once('/').ok_or(TileError::BadPath)?;
        let kind = if first == "entries" {
            TileKind::Entries
        } else {
            if first.is_empty() || first.len() > 1 || !first.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TileError::BadPath);
            }
            let level: u8 = first.parse().map_err(|_| TileError::BadPath)?;
            if level > MAX_LEVEL {
                return Err(TileError::BadPath);
            }
            TileKind::Hashes { level }
        };
        let (index_part, width) = match tail.split_once(".p/") {
            Some((idx, w)) => {
                if w.is_empty()
                    || w.len() > 3
                    || w.starts_with('0')
                    || !w.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(TileError::BadPath);
                }
                let w: u16 = w.parse().map_err(|_| TileError::BadPath)?;
                if !(1..256).contains(&w) {
                    return Err(TileError::BadPath);
                }
                (idx, w)
            }
            None => (tail, 256),
        };
        let mut index: u64 = 0;
        let elems: Vec<&str> = index_part.split('/').collect();
        for (i, e) in elems.iter().enumerate() {
            let digits = if i + 1 < elems.len() {
                e.strip_prefix('x').ok_or(TileError::BadPath)?
            } else {
                e
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TileError::BadPath);
            }
            let g: u64 = digits.parse().map_err(|_| TileError::BadPath)?;
            index = index
                .checked_mul(1000)
                .and_then(|v| v.checked_add(g))
                .ok_or(TileError::BadPath)?;
        }
        let tile = Self { kind, index, width };
        // Canonical form only (no leading x000 groups).
        if tile.to_string().strip_prefix("tile/") != Some(rest) {
            return Err(TileError::BadPath);
        }
        Ok(tile)
    }

    /// The range of leaves an entry bundle covers, or of tree-level nodes a hash tile covers.
    pub fn start(&self) -> u64 {
        self.index.saturating_mul(TILE_WIDTH)
    }
}

impl fmt::Display for TilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TileKind::Hashes { level } => write!(f, "tile/{level}/")?,
            TileKind::Entries => f.write_str("tile/entries/")?,
        }
        f.write_str(&encode_index(self.index))?;
        if !self.is_full() {
            write!(f, ".p/{}", self.width)?;
        }
        Ok(())
    }
}

/// Every tile of a tree of `size` leaves at `level`: `(full tiles, partial width)`.
pub fn level_shape(size: u64, level: u8) -> (u64, u16) {
    let shift = 8 * u32::from(level);
    let nodes = size.checked_shr(shift).unwrap_or(0);
    (nodes / TILE_WIDTH, (nodes % TILE_WIDTH) as u16)
}

/// All hash tiles that make up a tree of `size` leaves (full ones and the partial one per level).
pub fn tiles_for_size(size: u64) -> Vec<TilePath> {
    let mut out = Vec::new();
    for level in 0..=MAX_LEVEL {
        let (full, partial) = level_shape(size, level);
        if full == 0 && partial == 0 {
            break;
        }
        for index in 0..full {
            out.push(TilePath {
                kind: TileKind::Hashes { level },
                index,
                width: 256,
            });
        }
        if partial > 0 {
            out.push(TilePath {
                kind: TileKind::Hashes { level },
                index: full,
                width: partial,
            });
        }
    }
    out
}

/// Appends one entry to a bundle (u16 BE length, then the bytes).
pub fn push_bundle_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> Result<(), TileError> {
    let len = u16::try_from(entry.len()).map_err(|_| TileError::EntryTooLarge(entry.len()))?;
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
    Ok(())
}

/// Splits an entry bundle into its entries.
pub fn split_bundle(mut bytes: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<2>().ok_or(TileError::BadBundle)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len || out.len() >= TILE_WIDTH as usize {
            return Err(TileError::BadBundle);
        }
        out.push(&rest[..len]);
        bytes = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(encode_index(1_234_067), "x001/x234/067");
        let t = TilePath::parse("1/x001/x234/067.p/8").unwrap();
        assert_eq!(t.kind, TileKind::Hashes { level: 1 });
        assert_eq!(t.index, 1_234_067);
        assert_eq!(t.width, 8);
        assert_eq!(t.to_string(), "tile/1/x001/x234/067.p/8");
        let e = TilePath::parse("entries/000").unwrap();
        assert_eq!(e.kind, TileKind::Entries);
        assert!(e.is_full());
    }

    #[test]
    fn rejects_non_canonical_paths() {
        for p in [
            "",
            "0",
            "0/",
            "0/1",
            "0/0000",
            "0/x000/001",
            "0/001.p/0",
            "0/001.p/256",
            "0/001.p/010",
            "8/000",
            "00/000",
            "0/x1/000",
            "0/001.p/",
            "entries/000.p/256",
            "0/001/",
            "a/000",
            "0/-01",
            "0/x999/x999/x999/x999/x999/x999/x999/999",
            "0/000.p/1/2",
        ] {
            assert_eq!(TilePath::parse(p), Err(TileError::BadPath), "{p:?}");
        }
    }

    #[test]
    fn bundles_round_trip() {
        let mut b = Vec::new();
        push_bundle_entry(&mut b, b"abc").unwrap();
        push_bundle_entry(&mut b, b"").unwrap();
        assert_eq!(split_bundle(&b).unwrap(), vec![&b"abc"[..], &b""[..]]);
        assert_eq!(split_bundle(&b[..4]), Err(TileError::BadBundle));
        assert!(push_bundle_entry(&mut b, &vec![0; 65536]).is_err());
    }
}
