//! [`Key`]: a key as the MVCC store holds it — short keys inline, longer
//! ones in one shared allocation.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// Longest key kept inline.
const INLINE_BYTES_MAX: usize = 22;

/// A key's bytes, 24 bytes wide: up to 22 bytes inline (no allocation), a
/// longer key in an `Arc` shared by the key index and the revision index,
/// so a write to an existing key never copies it. Ordered, compared and
/// hashed as its bytes.
#[derive(Clone)]
pub(crate) enum Key {
    /// A short key: `bytes[..len]`.
    Inline {
        len: u8,
        bytes: [u8; INLINE_BYTES_MAX],
    },
    /// A longer key.
    Shared(Arc<[u8]>),
}

impl Key {
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Shared(b) => b,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(key: &[u8]) -> Key {
        if key.len() <= INLINE_BYTES_MAX {
            let mut bytes = [0u8; INLINE_BYTES_MAX];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Shared(Arc::from(key))
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn keys_compare_as_their_bytes_whatever_their_form() {
        let long = vec![b'a'; 40];
        let keys: Vec<&[u8]> = vec![b"", b"a", b"a\0", &long, b"b", &[0xff; 22], &[0xff; 23]];
        let mut map = BTreeMap::new();
        for k in &keys {
            map.insert(Key::from(*k), k.len());
        }
        let mut sorted = keys.clone();
        sorted.sort();
        let got: Vec<&[u8]> = map.keys().map(Key::as_bytes).collect();
        assert_eq!(got, sorted);
        for k in &keys {
            assert_eq!(map.get(*k), Some(&k.len()), "lookup by &[u8]");
        }
        assert!(matches!(Key::from(&[1u8; 22][..]), Key::Inline { .. }));
        assert!(matches!(Key::from(&[1u8; 23][..]), Key::Shared(_)));
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }
}
