//! Shared by the request-decoding tests: a seeded generator of random
//! request bodies laid out by `flotilla_kafka::schema`, whole request
//! frames encoded by `kafka-protocol`, and the forging of lengths.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use flotilla_kafka::dispatch;
use flotilla_kafka::schema::{self, Message, Struct, Ty};
use flotilla_kafka::walk::{LengthAt, LengthKind};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::collections::BTreeMap;

/// A small seeded generator (splitmix64): tests replay from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Every served API with the versions served, in `dispatch`'s order.
pub fn served() -> Vec<(ApiKey, i16, i16)> {
    dispatch::VERSIONS
        .iter()
        .chain(flotilla_kafka::group::VERSIONS)
        .copied()
        .collect()
}

fn varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a random body of `m` at `version` into `out`.
pub fn body(m: &Message, version: i16, rng: &mut Rng, out: &mut Vec<u8>) {
    let flexible = version >= m.flexible_from;
    structure(m.body, version, flexible, rng, out);
}

fn structure(s: &Struct, version: i16, flexible: bool, rng: &mut Rng, out: &mut Vec<u8>) {
    for f in s.fields.iter().filter(|f| f.in_version(version)) {
        value(&f.ty, f.nullable, version, flexible, rng, out);
    }
    if flexible {
        // Known tags first, then unknown ones above them: ascending, as the
        // crate writes them back. A known tag carries a non-null value (the
        // crate leaves a default-valued known tag out when it encodes).
        let mut fields: Vec<(u32, Vec<u8>)> = Vec::new();
        for t in s.tags.iter().filter(|t| t.field.in_version(version)) {
            if rng.one_in(2) {
                let mut v = Vec::new();
                value(&t.field.ty, false, version, flexible, rng, &mut v);
                fields.push((t.tag, v));
            }
        }
        let mut tag = s.tags.iter().map(|t| t.tag + 1).max().unwrap_or(0);
        for _ in 0..rng.below(3) {
            tag += 1 + rng.below(200) as u32;
            let len = rng.below(6) as usize;
            fields.push((tag, (0..len).map(|_| rng.next() as u8).collect()));
        }
        varint(out, fields.len() as u32);
        for (tag, v) in fields {
            varint(out, tag);
            varint(out, v.len() as u32);
            out.extend_from_slice(&v);
        }
    }
}

fn length(out: &mut Vec<u8>, n: Option<usize>, flexible: bool, classic_i16: bool) {
    match (flexible, n) {
        (true, None) => varint(out, 0),
        (true, Some(n)) => varint(out, n as u32 + 1),
        (false, n) if classic_i16 => {
            out.extend_from_slice(&n.map_or(-1, |n| n as i16).to_be_bytes())
        }
        (false, n) => out.extend_from_slice(&n.map_or(-1, |n| n as i32).to_be_bytes()),
    }
}

fn value(ty: &Ty, nullable: bool, version: i16, flexible: bool, rng: &mut Rng, out: &mut Vec<u8>) {
    let null = nullable && rng.one_in(5);
    match ty {
        Ty::I8 => out.push(rng.next() as u8),
        Ty::I16 => out.extend_from_slice(&(rng.next() as i16).to_be_bytes()),
        Ty::I32 => out.extend_from_slice(&(rng.next() as i32).to_be_bytes()),
        Ty::I64 => out.extend_from_slice(&(rng.next() as i64).to_be_bytes()),
        // The crate reads any non-zero byte as true and writes 1.
        Ty::Bool => out.push(rng.below(2) as u8),
        Ty::Uuid => (0..16).for_each(|_| out.push(rng.next() as u8)),
        Ty::Str => {
            if null {
                return length(out, None, flexible, true);
            }
            let len = if rng.one_in(10) {
                130 + rng.below(200)
            } else {
                rng.below(7)
            } as usize;
            length(out, Some(len), flexible, true);
            out.extend((0..len).map(|_| b'a' + rng.below(26) as u8));
        }
        Ty::Bytes => {
            if null {
                return length(out, None, flexible, false);
            }
            let len = if rng.one_in(10) {
                130 + rng.below(200)
            } else {
                rng.below(9)
            } as usize;
            length(out, Some(len), flexible, false);
            out.extend((0..len).map(|_| rng.next() as u8));
        }
        Ty::Array(elem) => {
            if null {
                return length(out, None, flexible, false);
            }
            let n = rng.below(4) as usize;
            length(out, Some(n), flexible, false);
            for _ in 0..n {
                value(elem, false, version, flexible, rng, out);
            }
        }
        Ty::Struct(s) => structure(s, version, flexible, rng, out),
    }
}

/// A request built by the crate's encoder: random contents (from
/// [`body`], decoded by the crate), a random header, the frame's bytes.
pub struct Built {
    pub header: RequestHeader,
    pub body: RequestKind,
    pub frame: Bytes,
    /// The body as generated, before the crate decoded and re-encoded it.
    pub generated: Vec<u8>,
    /// The body as the crate encoded it.
    pub encoded: Vec<u8>,
}

/// Builds a random request of `api` at `version`; `Err` says where the
/// schema and the crate disagree.
pub fn build(api: ApiKey, version: i16, rng: &mut Rng) -> Result<Built, String> {
    let m = schema::message(api).ok_or("no layout")?;
    let mut generated = Vec::new();
    body(m, version, rng, &mut generated);
    let mut rest = Bytes::from(generated.clone());
    let decoded = RequestKind::decode(api, &mut rest, version)
        .map_err(|e| format!("the crate refused a generated body: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("the crate left {} bytes of the body", rest.len()));
    }
    let mut enc = BytesMut::new();
    decoded
        .encode(&mut enc, version)
        .map_err(|e| format!("the crate cannot encode it back: {e}"))?;
    let mut header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(rng.next() as i32)
        .with_client_id(if rng.one_in(4) {
            None
        } else {
            Some(StrBytes::from_string("c".repeat(rng.below(12) as usize)))
        });
    let header_version = api.request_header_version(version);
    if header_version >= 2 {
        let mut tags = BTreeMap::new();
        for _ in 0..rng.below(3) {
            tags.insert(
                rng.below(300) as i32,
                Bytes::from(vec![7u8; rng.below(5) as usize]),
            );
        }
        header = header.with_unknown_tagged_fields(tags);
    }
    let mut frame = BytesMut::new();
    header
        .encode(&mut frame, header_version)
        .map_err(|e| format!("header: {e}"))?;
    frame.extend_from_slice(&enc);
    Ok(Built {
        header,
        body: decoded,
        frame: frame.freeze(),
        generated,
        encoded: enc.to_vec(),
    })
}

/// The ways a length at `at` is forged: values far beyond any frame, and
/// negative ones the protocol does not allow.
pub fn forgeries(frame: &[u8], at: LengthAt) -> Vec<Vec<u8>> {
    let splice = |width: usize, with: &[u8]| {
        let mut f = frame[..at.at].to_vec();
        f.extend_from_slice(with);
        f.extend_from_slice(&frame[at.at + width..]);
        f
    };
    match at.kind {
        LengthKind::I16 => [i16::MAX, 0x4000, -2, i16::MIN]
            .iter()
            .map(|v| splice(2, &v.to_be_bytes()))
            .collect(),
        LengthKind::I32 => [i32::MAX, 0x4000_0000, 0x0100_0000, -2, i32::MIN]
            .iter()
            .map(|v| splice(4, &v.to_be_bytes()))
            .collect(),
        LengthKind::Varint(width) => [u32::MAX, 0x8000_0000, 0x0100_0000]
            .iter()
            .map(|&v| {
                let mut b = Vec::new();
                varint(&mut b, v);
                splice(width, &b)
            })
            .collect(),
    }
}
