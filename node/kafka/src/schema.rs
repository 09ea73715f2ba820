//! The wire layout of every request body the listener serves, as data: for
//! each API, its versions, the first flexible version (compact lengths and
//! tagged fields), and per structure the fields in wire order with the
//! versions that carry them. [`crate::walk`] checks a frame against it
//! before `kafka-protocol` decodes the frame.
//!
//! The facts are Kafka's message definitions (the `*Request.json` files:
//! `validVersions`, `flexibleVersions`, each field's `versions`, `type`,
//! `tag` and `taggedVersions`), restricted to what `kafka-protocol` 0.18
//! decodes: its generated decoders stop at a version range of their own
//! (InitProducerId at v5, OffsetCommit at v9, ...), and a field the crate
//! does not read is left out here too, or the walk would drift from it.
//! `tests/bounded_decode.rs` checks the tables against the crate by
//! encoding random requests with it at every version served.
//!
//! Nullability is recorded as the crate has it (an `Option` field accepts
//! null at every version); the walk itself accepts null wherever a length
//! can say so, since a null costs no allocation and the crate rejects it
//! where it is not allowed.

use kafka_protocol::messages::ApiKey;

#[path = "schema_tables.rs"]
mod tables;
pub use tables::*;

/// "Up to the message's last version" in a field's version range.
pub const MAX: i16 = i16::MAX;

/// A field's wire type.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// `int8`.
    I8,
    /// `int16`.
    I16,
    /// `int32`.
    I32,
    /// `int64`.
    I64,
    /// `bool`: one byte.
    Bool,
    /// `uuid`: sixteen bytes.
    Uuid,
    /// `string`: `int16` length (-1 null), or in flexible versions an
    /// unsigned varint of length + 1 (0 null).
    Str,
    /// `bytes` and `records`: `int32` length (-1 null), or an unsigned varint
    /// of length + 1.
    Bytes,
    /// `[]T`: `int32` count (-1 null), or an unsigned varint of count + 1.
    Array(&'static Ty),
    /// A structure, inline.
    Struct(&'static Struct),
}

/// One field of a structure.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Its name (the crate's).
    pub name: &'static str,
    /// The versions that carry it, inclusive; [`MAX`] for "and later".
    pub versions: (i16, i16),
    /// Its type.
    pub ty: Ty,
    /// Whether the crate holds it as an `Option` (null is valid).
    pub nullable: bool,
}

impl Field {
    /// Whether `version` carries this field.
    pub fn in_version(&self, version: i16) -> bool {
        (self.versions.0..=self.versions.1).contains(&version)
    }
}

/// A tagged field the crate knows by number; any other tag is skipped by
/// its size.
#[derive(Debug, Clone, Copy)]
pub struct Tagged {
    /// The tag.
    pub tag: u32,
    /// The field (its versions are the `taggedVersions`).
    pub field: Field,
}

/// A structure: the fields in wire order, then (in flexible versions) its
/// tagged fields.
#[derive(Debug)]
pub struct Struct {
    /// Its name (the crate's type).
    pub name: &'static str,
    /// The fields in wire order.
    pub fields: &'static [Field],
    /// The tagged fields known by number.
    pub tags: &'static [Tagged],
}

/// A request body.
#[derive(Debug)]
pub struct Message {
    /// Its API.
    pub api: ApiKey,
    /// The versions the crate decodes, inclusive.
    pub versions: (i16, i16),
    /// The first flexible version.
    pub flexible_from: i16,
    /// The top-level structure.
    pub body: &'static Struct,
}

/// The layout of `api`'s request body, if the listener has one.
pub fn message(api: ApiKey) -> Option<&'static Message> {
    MESSAGES.iter().find(|m| m.api == api)
}

const fn field(name: &'static str, from: i16, to: i16, ty: Ty) -> Field {
    Field {
        name,
        versions: (from, to),
        ty,
        nullable: false,
    }
}

const fn nullable(name: &'static str, from: i16, to: i16, ty: Ty) -> Field {
    Field {
        name,
        versions: (from, to),
        ty,
        nullable: true,
    }
}
