use std::fmt;
use std::str::FromStr;

use super::base32;

/// The only store directory provenix supports (as Nix's binary-cache protocol assumes).
pub const STORE_DIR: &str = "/nix/store";

/// Maximum length of a store path name, as Nix enforces.
const MAX_NAME_LEN: usize = 211;

/// Why a string is not a store path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    #[error("store path must start with {STORE_DIR}/")]
    NotInStore,
    #[error("store path hash part must be 32 nixbase32 characters")]
    BadHash,
    #[error("store path must have a '-' after the hash part")]
    MissingDash,
    #[error("store path name is empty, longer than {MAX_NAME_LEN} bytes, starts with '.', or has a character outside [A-Za-z0-9+-._?=]")]
    BadName,
}

/// The 20-byte hash part of a store path (`/nix/store/<hash>-<name>`), shown as 32 nixbase32
/// characters. For input-addressed outputs this is the log key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePathHash([u8; 20]);

impl StorePathHash {
    /// Length of the textual form.
    pub const TEXT_LEN: usize = 32;

    /// The raw 20 bytes (in Nix's internal byte order).
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }
}

impl FromStr for StorePathHash {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != Self::TEXT_LEN {
            return Err(StorePathError::BadHash);
        }
        let bytes = base32::decode(s).ok_or(StorePathError::BadHash)?;
        let arr: [u8; 20] = bytes.try_into().map_err(|_| StorePathError::BadHash)?;
        Ok(Self(arr))
    }
}

impl fmt::Display for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32::encode(&self.0))
    }
}

impl fmt::Debug for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePathHash({self})")
    }
}

/// A store path `/nix/store/<hash>-<name>`, validated as Nix validates it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    hash: StorePathHash,
    name: String,
}

impl StorePath {
    /// The hash part.
    pub fn hash(&self) -> StorePathHash {
        self.hash
    }

    /// The name after the dash.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash>-<name>`, as narinfo `References` lists it.
    pub fn basename(&self) -> String {
        format!("{}-{}", self.hash, self.name)
    }

    /// Parses a basename `<hash>-<name>` (without the store directory).
    pub fn from_basename(s: &str) -> Result<Self, StorePathError> {
        let hash_str = s
            .get(..StorePathHash::TEXT_LEN)
            .ok_or(StorePathError::BadHash)?;
        let hash: StorePathHash = hash_str.parse()?;
        let rest = &s[StorePathHash::TEXT_LEN..];
        let name = rest.strip_prefix('-').ok_or(StorePathError::MissingDash)?;
        if !is_valid_name(name) {
            return Err(StorePathError::BadName);
        }
        Ok(Self {
            hash,
            name: name.to_owned(),
        })
    }

    /// Whether this is a derivation (`.drv`) path.
    pub fn is_derivation(&self) -> bool {
        self.name.ends_with(".drv")
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

impl FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(StorePathError::NotInStore)?;
        Self::from_basename(rest)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl serde::Serialize for StorePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StorePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_real_path() {
        let s = "/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa-hello-provenix";
        let p: StorePath = s.parse().unwrap();
        assert_eq!(p.to_string(), s);
        assert_eq!(p.hash().to_string(), "y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa");
        assert_eq!(p.name(), "hello-provenix");
        assert!(!p.is_derivation());
    }

    #[test]
    fn rejects_bad_paths() {
        use StorePathError::*;
        let cases = [
            ("/tmp/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa-x", NotInStore),
            ("/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfe-x", BadHash), // 'e' not in alphabet
            ("/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcs-x", BadHash),
            ("/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa_x", MissingDash),
            ("/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa-", BadName),
            ("/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa-.x", BadName),
            ("/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa-a/b", BadName),
            ("/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa-é", BadName),
            ("/nix/store/", BadHash),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<StorePath>().unwrap_err(), want, "{s}");
        }
    }

    #[test]
    fn non_canonical_base32_is_rejected() {
        // 32 chars encode 160 bits exactly, so every string in the alphabet decodes; check a
        // character that Nix does not use.
        assert!("00000000000000000000000000000000"
            .parse::<StorePathHash>()
            .is_ok());
        assert!("0000000000000000000000000000000u"
            .parse::<StorePathHash>()
            .is_err());
    }
}
