//! A bounded walk over a request frame before `kafka-protocol` decodes it.
//!
//! The crate sizes a `Vec` from an array's count before it reads any
//! element, so a frame of a few bytes that claims 2³¹ elements makes it
//! ask for hundreds of gigabytes. The walk reads the frame as the crate
//! will — the request header, then the body by its layout in
//! [`crate::schema`] — and refuses it, without allocating, when:
//! 1. a string or bytes length exceeds the bytes left in the frame;
//! 2. an array count exceeds the bytes left divided by the smallest wire
//!    size of one element (so a walked array's elements are all present);
//! 3. a tagged field's size exceeds the bytes left, or a known tag comes
//!    at a version that does not carry it (the crate rejects that too);
//! 4. the frame ends before a field.
//!
//! A frame that walks cleanly holds every element the crate will allocate
//! for, so each allocation it makes is at most the frame's length times
//! the in-memory size of an element over its smallest wire size.
//!
//! The walk follows the crate's reading exactly, including its quirks: an
//! unsigned varint is at most five bytes (the excess bits of the fifth are
//! dropped), and a known tagged field is read by its type whatever size it
//! announced.

use crate::schema::{self, Struct, Ty};
use kafka_protocol::messages::ApiKey;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct Refused {
    /// The offset in the frame of the field at fault.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

/// The encoding of a length or count the walk read: what a test that
/// forges lengths overwrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthKind {
    /// A big-endian `int16` (a classic string length).
    I16,
    /// A big-endian `int32` (a classic bytes length or array count).
    I32,
    /// An unsigned varint (a compact length or count, a tagged-field
    /// count or size) of this many bytes.
    Varint(usize),
}

/// Where a length or count sits in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthAt {
    /// Its offset in the frame.
    pub at: usize,
    /// Its encoding.
    pub kind: LengthKind,
}

/// Checks that `frame` (a whole request: header, then body) of `api` at
/// `version` walks within its bytes. `Ok` means the crate may decode it.
pub fn check(frame: &[u8], api: ApiKey, version: i16) -> Result<(), Refused> {
    walk(frame, api, version, None)
}

/// Walks `frame` like [`check`] and returns the position of every length
/// and count it read, in order.
pub fn lengths(frame: &[u8], api: ApiKey, version: i16) -> Result<Vec<LengthAt>, Refused> {
    let mut found = Vec::new();
    walk(frame, api, version, Some(&mut found))?;
    Ok(found)
}

fn walk(
    frame: &[u8],
    api: ApiKey,
    version: i16,
    found: Option<&mut Vec<LengthAt>>,
) -> Result<(), Refused> {
    let refused = |what| Refused { at: 0, what };
    let message = schema::message(api).ok_or(refused("no request layout for this API"))?;
    if !(message.versions.0..=message.versions.1).contains(&version) {
        return Err(refused("version outside the request layout"));
    }
    let mut w = Walker {
        frame,
        at: 0,
        version,
        flexible: version >= message.flexible_from,
        found,
    };
    w.header(api.request_header_version(version))?;
    w.structure(message.body)
}

struct Walker<'a, 'f> {
    frame: &'a [u8],
    at: usize,
    version: i16,
    flexible: bool,
    found: Option<&'f mut Vec<LengthAt>>,
}

impl Walker<'_, '_> {
    fn left(&self) -> usize {
        self.frame.len() - self.at
    }

    fn refuse<T>(&self, what: &'static str) -> Result<T, Refused> {
        Err(Refused { at: self.at, what })
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Refused> {
        if n > self.left() {
            return self.refuse(what);
        }
        self.at += n;
        Ok(())
    }

    fn note(&mut self, at: usize, kind: LengthKind) {
        if let Some(found) = self.found.as_deref_mut() {
            found.push(LengthAt { at, kind });
        }
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Refused> {
        let Some(b) = self.frame.get(self.at..self.at + N) else {
            return self.refuse("frame ends inside a field");
        };
        self.at += N;
        Ok(b.try_into().expect("N bytes"))
    }

    fn i16_len(&mut self) -> Result<i16, Refused> {
        let at = self.at;
        let n = i16::from_be_bytes(self.fixed()?);
        self.note(at, LengthKind::I16);
        Ok(n)
    }

    fn i32_len(&mut self) -> Result<i32, Refused> {
        let at = self.at;
        let n = i32::from_be_bytes(self.fixed()?);
        self.note(at, LengthKind::I32);
        Ok(n)
    }

    /// An unsigned varint as the crate reads it: at most five bytes.
    fn varint(&mut self) -> Result<u32, Refused> {
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = self.fixed()?;
            value |= u32::from(b & 0x7f) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// A varint that is a length or a count.
    fn varint_len(&mut self) -> Result<u32, Refused> {
        let start = self.at;
        let n = self.varint()?;
        self.note(start, LengthKind::Varint(self.at - start));
        Ok(n)
    }

    /// Request header v1 or v2: api key, version, correlation id, a classic
    /// nullable client id (even in v2), and in v2 tagged fields.
    fn header(&mut self, header_version: i16) -> Result<(), Refused> {
        if !(1..=2).contains(&header_version) {
            return self.refuse("request header version not 1 or 2");
        }
        self.skip(8, "frame ends inside the request header")?;
        self.string(false)?;
        if header_version >= 2 {
            self.tagged_fields(&[])?;
        }
        Ok(())
    }

    fn structure(&mut self, s: &Struct) -> Result<(), Refused> {
        let version = self.version;
        for f in s.fields.iter().filter(|f| f.in_version(version)) {
            self.value(f.ty)?;
        }
        if self.flexible {
            self.tagged_fields(s.tags)?;
        }
        Ok(())
    }

    fn tagged_fields(&mut self, known: &[schema::Tagged]) -> Result<(), Refused> {
        let count = self.varint_len()?;
        // Each tagged field takes at least two bytes (tag and size), so the
        // loop ends with the frame whatever the count.
        for _ in 0..count {
            let tag = self.varint()?;
            match known.iter().find(|t| t.tag == tag) {
                // The crate reads a known tag by its type, whatever its size.
                Some(t) if t.field.in_version(self.version) => {
                    self.varint()?;
                    self.value(t.field.ty)?
                }
                Some(_) => return self.refuse("tagged field not valid at this version"),
                None => {
                    let size = self.varint_len()?;
                    self.skip(size as usize, "tagged field longer than the frame")?
                }
            }
        }
        Ok(())
    }

    fn value(&mut self, ty: Ty) -> Result<(), Refused> {
        match ty {
            Ty::I8 | Ty::Bool => self.skip(1, "frame ends inside a field"),
            Ty::I16 => self.skip(2, "frame ends inside a field"),
            Ty::I32 => self.skip(4, "frame ends inside a field"),
            Ty::I64 => self.skip(8, "frame ends inside a field"),
            Ty::Uuid => self.skip(16, "frame ends inside a field"),
            Ty::Str => self.string(self.flexible),
            Ty::Bytes => self.bytes(),
            Ty::Array(elem) => self.array(elem),
            Ty::Struct(s) => self.structure(s),
        }
    }

    fn string(&mut self, compact: bool) -> Result<(), Refused> {
        self.sized(compact, false)
    }

    fn bytes(&mut self) -> Result<(), Refused> {
        self.sized(self.flexible, true)
    }

    /// Skips a string (`wide` false: `int16` length) or bytes (`wide` true:
    /// `int32` length) field; `compact` means an unsigned varint of length
    /// plus one. A null (-1, or 0 when compact) has no bytes.
    fn sized(&mut self, compact: bool, wide: bool) -> Result<(), Refused> {
        let len = if compact {
            match self.varint_len()? {
                0 => return Ok(()),
                n => (n - 1) as usize,
            }
        } else {
            let n = if wide {
                self.i32_len()?
            } else {
                i32::from(self.i16_len()?)
            };
            match n {
                -1 => return Ok(()),
                n if n < 0 && wide => return self.refuse("negative bytes length"),
                n if n < 0 => return self.refuse("negative string length"),
                n => n as usize,
            }
        };
        let what = if wide {
            "bytes longer than the frame"
        } else {
            "string longer than the frame"
        };
        self.skip(len, what)
    }

    fn array(&mut self, elem: &Ty) -> Result<(), Refused> {
        let count_at = self.at;
        let count = if self.flexible {
            match self.varint_len()? {
                0 => return Ok(()),
                n => (n - 1) as usize,
            }
        } else {
            match self.i32_len()? {
                -1 => return Ok(()),
                n if n < 0 => return self.refuse("negative array count"),
                n => n as usize,
            }
        };
        let min = min_wire_bytes(elem, self.version, self.flexible).max(1);
        if count > self.left() / min {
            return Err(Refused {
                at: count_at,
                what: "array count above what the frame can hold",
            });
        }
        for _ in 0..count {
            self.value(*elem)?;
        }
        Ok(())
    }
}

/// The fewest bytes a value of `ty` takes on the wire at `version`.
pub fn min_wire_bytes(ty: &Ty, version: i16, flexible: bool) -> usize {
    match ty {
        Ty::I8 | Ty::Bool => 1,
        Ty::I16 => 2,
        Ty::I32 => 4,
        Ty::I64 => 8,
        Ty::Uuid => 16,
        // A null or empty value: its length alone.
        Ty::Str if !flexible => 2,
        Ty::Bytes | Ty::Array(_) if !flexible => 4,
        Ty::Str | Ty::Bytes | Ty::Array(_) => 1,
        Ty::Struct(s) => {
            let fields: usize = s
                .fields
                .iter()
                .filter(|f| f.in_version(version))
                .map(|f| min_wire_bytes(&f.ty, version, flexible))
                .sum();
            fields + usize::from(flexible)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header v1 frame of `api` at `version` with a null client id.
    fn frame(api: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&(api as i16).to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&7i32.to_be_bytes());
        f.extend_from_slice(&(-1i16).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn an_array_count_beyond_the_frame_is_refused_at_the_count() {
        // Metadata v1: topics array claiming 2^31 - 1 names, no names sent.
        let f = frame(ApiKey::Metadata, 1, &i32::MAX.to_be_bytes());
        let e = check(&f, ApiKey::Metadata, 1).unwrap_err();
        assert_eq!(e.at, 10);
        // The same frame with one empty name, then a count of one, walks.
        let f = frame(ApiKey::Metadata, 1, &[0, 0, 0, 1, 0, 0]);
        assert_eq!(check(&f, ApiKey::Metadata, 1), Ok(()));
        // Two claimed, one sent: the count is still within what the frame
        // could hold (4 bytes left, 2 per name) but the second name is
        // missing.
        let f = frame(ApiKey::Metadata, 1, &[0, 0, 0, 2, 0, 0, 0]);
        assert!(check(&f, ApiKey::Metadata, 1).is_err());
    }

    #[test]
    fn compact_lengths_and_unknown_tags_are_bounded() {
        // ApiVersions v3 (header v2): client software name claims ~4 GiB.
        let mut f = frame(ApiKey::ApiVersions, 3, &[0]);
        f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            check(&f, ApiKey::ApiVersions, 3).unwrap_err().what,
            "string longer than the frame"
        );
        // Two empty strings, one unknown tag of 3 bytes: walks.
        let ok = frame(ApiKey::ApiVersions, 3, &[0, 1, 1, 1, 9, 3, 1, 2, 3]);
        assert_eq!(check(&ok, ApiKey::ApiVersions, 3), Ok(()));
        // The same tag claiming 4 bytes.
        let lying = frame(ApiKey::ApiVersions, 3, &[0, 1, 1, 1, 9, 4, 1, 2, 3]);
        assert!(check(&lying, ApiKey::ApiVersions, 3).is_err());
    }

    #[test]
    fn a_known_tag_outside_its_versions_is_refused() {
        // Fetch v12 knows tag 1 (replica state) only from v15.
        let mut body = vec![0u8; 4 * 4 + 1 + 4 + 4];
        body.extend_from_slice(&[1, 1, 1]); // topics, forgotten, rack id
        body.extend_from_slice(&[1, 1, 0]); // one tag: 1, size 0
        let f = frame(ApiKey::Fetch, 12, &body);
        // Header v2 needs its own tagged fields after the client id.
        let mut f2 = f[..10].to_vec();
        f2.push(0);
        f2.extend_from_slice(&f[10..]);
        assert_eq!(
            check(&f2, ApiKey::Fetch, 12).unwrap_err().what,
            "tagged field not valid at this version"
        );
    }
}
