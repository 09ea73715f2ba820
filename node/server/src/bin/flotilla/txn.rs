//! The text of `flotilla kv txn`, as etcdctl's `txn` reads it: comparisons,
//! a blank line, the requests run when they all hold, a blank line, the
//! requests run otherwise.
//!
//! ```text
//! value("k") = "v"
//! version("k") > "3"
//!
//! put k v2
//! get k
//!
//! del k
//! ```
//!
//! Comparisons are `TARGET("key") OP "value"` with TARGET one of `value`,
//! `version`, `create`, `mod`, `lease` (etcdctl's short forms `val`, `ver`,
//! `c`, `m` too) and OP one of `=`, `!=`, `<`, `>`; revisions and versions
//! are decimal, leases hex. Requests are `put KEY VALUE [--lease=ID]
//! [--prev-kv]`, `get KEY [END] [--prefix] [--from-key] [--limit=N]
//! [--rev=N] [--keys-only] [--count-only]` and `del KEY [END] [--prefix]
//! [--from-key] [--prev-kv]`; an argument with spaces goes in double
//! quotes.

use crate::kv::key_range;
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// `flotilla kv txn --help`.
pub const HELP: &str = r#"Run a transaction read from stdin (or --file), as `etcdctl txn`.

The text: comparisons, a blank line, the requests to run if all hold, a
blank line, the requests to run otherwise.

Comparisons (operators =, !=, < and >):
  value("k") = "v"     version("k") > "3"     create("k") = "0"
  mod("k") < "10"      lease("k") = "694d5765fc71500b"

Requests (arguments with spaces in double quotes):
  put KEY VALUE [--lease=ID] [--prev-kv]
  get KEY [END] [--prefix] [--from-key] [--limit=N] [--rev=N] [--keys-only] [--count-only]
  del KEY [END] [--prefix] [--from-key] [--prev-kv]

Prints SUCCESS or FAILURE, then each response after a blank line."#;

/// Where the text of a transaction is wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("transaction line {line}: {reason}")]
pub struct TxnParseError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// The part of the text being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Compares,
    Success,
    Failure,
    Done,
}

/// Parses the whole text of a transaction.
pub fn parse_txn(text: &str) -> Result<TxnRequest, TxnParseError> {
    let mut txn = TxnRequest::default();
    let mut section = Section::Compares;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let fail = |reason: String| TxnParseError {
            line: i + 1,
            reason,
        };
        if line.is_empty() {
            section = match section {
                Section::Compares => Section::Success,
                Section::Success => Section::Failure,
                Section::Failure | Section::Done => Section::Done,
            };
            continue;
        }
        match section {
            Section::Compares => txn.compare.push(parse_compare(line).map_err(fail)?),
            Section::Success => txn.success.push(parse_request(line).map_err(fail)?),
            Section::Failure => txn.failure.push(parse_request(line).map_err(fail)?),
            Section::Done => {
                return Err(fail(format!(
                    "{line:?} comes after the failure requests, which end at the third blank line"
                )));
            }
        }
    }
    Ok(txn)
}

/// Reads a double-quoted string at the start of `text` (escapes `\"`,
/// `\\`, `\n`, `\r`, `\t`, `\0`, `\xHH`); returns its bytes and the rest.
fn quoted(text: &str) -> Result<(Vec<u8>, &str), String> {
    let Some(body) = text.strip_prefix('"') else {
        return Err(format!("expected a double-quoted string at {text:?}"));
    };
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    '"' | '\\' => out.push(e as u8),
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    '0' => out.push(0),
                    'x' => {
                        let hex: String = chars.by_ref().take(2).map(|(_, h)| h).collect();
                        let byte = u8::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 2)
                            .ok_or_else(|| format!("bad escape \\x{hex} (want two hex digits)"))?;
                        out.push(byte);
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Err(format!("unterminated string {text:?}"))
}

fn parse_compare(line: &str) -> Result<Compare, String> {
    let malformed = |why: &str| {
        format!("malformed comparison {line:?}: {why} (expected like value(\"key\") = \"v\")")
    };
    let (target, rest) = line
        .split_once('(')
        .ok_or_else(|| malformed("no '(' after the target"))?;
    let (key, rest) = quoted(rest.trim_start()).map_err(|e| malformed(&e))?;
    let rest = rest
        .trim_start()
        .strip_prefix(')')
        .ok_or_else(|| malformed("no ')' after the key"))?
        .trim_start();
    let op_len = rest
        .find(|c: char| !matches!(c, '=' | '!' | '<' | '>'))
        .unwrap_or(rest.len());
    let (op, rest) = rest.split_at(op_len);
    let result = match op {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        "" => return Err(malformed("no operator")),
        other => {
            return Err(malformed(&format!(
                "unknown operator {other:?} (use =, !=, < or >)"
            )));
        }
    };
    let rest = rest.trim_start();
    let (value, rest) = if rest.starts_with('"') {
        quoted(rest).map_err(|e| malformed(&e))?
    } else {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        (rest.as_bytes()[..end].to_vec(), &rest[end..])
    };
    if !rest.trim().is_empty() {
        return Err(malformed(&format!(
            "unexpected {:?} at the end",
            rest.trim()
        )));
    }
    let text = String::from_utf8_lossy(&value);
    let number = |radix: u32, what: &str| {
        i64::from_str_radix(&text, radix).map_err(|_| malformed(&format!("{text:?} is not {what}")))
    };
    let (target, union) = match target.trim() {
        "value" | "val" => (CompareTarget::Value, TargetUnion::Value(value.clone())),
        "version" | "ver" => (
            CompareTarget::Version,
            TargetUnion::Version(number(10, "a version")?),
        ),
        "create" | "c" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number(10, "a revision")?),
        ),
        "mod" | "m" => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(number(10, "a revision")?),
        ),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(number(16, "a lease id in hex")?),
        ),
        other => {
            return Err(malformed(&format!(
                "unknown target {other:?} (use value, version, create, mod or lease)"
            )));
        }
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// Splits a request line into arguments: whitespace separates them, double
/// quotes group (with the escapes of [`quoted`]).
fn arguments(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut args = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let mut arg = Vec::new();
        while let Some(c) = rest.chars().next() {
            if c.is_whitespace() {
                break;
            }
            if c == '"' {
                let (bytes, after) = quoted(rest)?;
                arg.extend_from_slice(&bytes);
                rest = after;
            } else {
                arg.extend_from_slice(&rest.as_bytes()[..c.len_utf8()]);
                rest = &rest[c.len_utf8()..];
            }
        }
        args.push(arg);
        rest = rest.trim_start();
    }
    Ok(args)
}

/// A request's flags and positional arguments.
#[derive(Default)]
struct Parsed {
    positional: Vec<Vec<u8>>,
    flags: Vec<(String, Option<String>)>,
}

impl Parsed {
    /// Splits `args`; `valued` names the flags that take a value (as
    /// `--flag=v` or `--flag v`).
    fn new(args: Vec<Vec<u8>>, valued: &[&str], plain: &[&str]) -> Result<Parsed, String> {
        let mut parsed = Parsed::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix(b"--") else {
                parsed.positional.push(arg);
                continue;
            };
            let flag = String::from_utf8_lossy(flag).into_owned();
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag, None),
            };
            if valued.contains(&name.as_str()) {
                let value = match value {
                    Some(v) => v,
                    None => String::from_utf8_lossy(
                        &args
                            .next()
                            .ok_or_else(|| format!("--{name} needs a value"))?,
                    )
                    .into_owned(),
                };
                parsed.flags.push((name, Some(value)));
            } else if plain.contains(&name.as_str()) {
                if value.is_some() {
                    return Err(format!("--{name} takes no value"));
                }
                parsed.flags.push((name, None));
            } else {
                let mut known: Vec<String> = valued
                    .iter()
                    .chain(plain)
                    .map(|f| format!("--{f}"))
                    .collect();
                known.sort();
                return Err(format!(
                    "unknown flag --{name} (known: {})",
                    known.join(", ")
                ));
            }
        }
        Ok(parsed)
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn number(&self, name: &str) -> Result<i64, String> {
        match self.value(name) {
            None => Ok(0),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("--{name}={v}: not a number of at least 0")),
        }
    }

    /// The positional key and range end, as `key_range` sees them.
    fn range(&self, what: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
        let (key, end) = match self.positional.as_slice() {
            [key] => (key, None),
            [key, end] => (key, Some(end.as_slice())),
            [] => return Err(format!("{what} needs a key")),
            _ => return Err(format!("{what} takes a key and at most a range end")),
        };
        key_range(key, end, self.has("prefix"), self.has("from-key"))
    }
}

fn parse_request(line: &str) -> Result<RequestOp, String> {
    let mut args = arguments(line)?;
    if args.is_empty() {
        return Err("empty request".into());
    }
    let verb = String::from_utf8_lossy(&args.remove(0)).into_owned();
    let request = match verb.as_str() {
        "put" => {
            let p = Parsed::new(args, &["lease"], &["prev-kv"])?;
            let [key, value] = <[Vec<u8>; 2]>::try_from(p.positional.clone())
                .map_err(|_| "put takes a key and a value".to_string())?;
            let lease = match p.value("lease") {
                Some(id) => crate::connect::parse_lease_id(id)?,
                None => 0,
            };
            Op::RequestPut(PutRequest {
                key,
                value,
                lease,
                prev_kv: p.has("prev-kv"),
                ..PutRequest::default()
            })
        }
        "get" => {
            let p = Parsed::new(
                args,
                &["limit", "rev"],
                &["prefix", "from-key", "keys-only", "count-only"],
            )?;
            let (key, range_end) = p.range("get")?;
            Op::RequestRange(RangeRequest {
                key,
                range_end,
                limit: p.number("limit")?,
                revision: p.number("rev")?,
                keys_only: p.has("keys-only"),
                count_only: p.has("count-only"),
                ..RangeRequest::default()
            })
        }
        "del" => {
            let p = Parsed::new(args, &[], &["prefix", "from-key", "prev-kv"])?;
            let (key, range_end) = p.range("del")?;
            Op::RequestDeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: p.has("prev-kv"),
            })
        }
        other => {
            return Err(format!(
                "unknown request {other:?} in {line:?} (use put, get or del)"
            ));
        }
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(line: &str) -> Compare {
        parse_compare(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn comparisons_of_every_target() {
        let c = compare(r#"value("k") = "v w""#);
        assert_eq!(c.target, CompareTarget::Value as i32);
        assert_eq!(c.result, CompareResult::Equal as i32);
        assert_eq!(c.key, b"k");
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"v w".to_vec())));
        let c = compare(r#"version("k") > "3""#);
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Version(3)));
        let c = compare(r#"create("k") = "0""#);
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(0)));
        let c = compare(r#"mod("k")<"10""#);
        assert_eq!(c.result, CompareResult::Less as i32);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(10)));
        let c = compare(r#"lease("k") != "694d5765fc71500b""#);
        assert_eq!(c.result, CompareResult::NotEqual as i32);
        assert_eq!(
            c.target_union,
            Some(TargetUnion::Lease(0x694d_5765_fc71_500b))
        );
        let c = compare(r#"c("a \"q\" \x01") = 0"#);
        assert_eq!(c.key, b"a \"q\" \x01");
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(0)));
    }

    #[test]
    fn bad_comparisons_say_why() {
        for (line, needle) in [
            (r#"valu("k") = "v""#, "unknown target \"valu\""),
            (r#"value("k") == "v""#, "unknown operator \"==\""),
            (r#"value("k") "v""#, "no operator"),
            (r#"value(k) = "v""#, "double-quoted"),
            (r#"value("k" = "v""#, "no ')'"),
            (r#"version("k") > "x""#, "not a version"),
            (r#"value("k") = "v" extra"#, "unexpected \"extra\""),
            (r#"value("k) = v"#, "unterminated"),
            ("put k v", "no '('"),
        ] {
            let err = parse_compare(line).expect_err(line);
            assert!(err.contains(needle), "{line}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn requests_with_flags_and_quotes() {
        let r = parse_request(r#"put "a key" "a value" --lease=1f --prev-kv"#).expect("put");
        let Some(Op::RequestPut(p)) = r.request else {
            panic!("not a put")
        };
        assert_eq!(
            (p.key.as_slice(), p.value.as_slice()),
            (&b"a key"[..], &b"a value"[..])
        );
        assert_eq!(p.lease, 0x1f);
        assert!(p.prev_kv);
        let r = parse_request("get k --prefix --limit 2 --rev=7 --keys-only").expect("get");
        let Some(Op::RequestRange(g)) = r.request else {
            panic!("not a get")
        };
        assert_eq!(g.range_end, b"l");
        assert_eq!((g.limit, g.revision, g.keys_only), (2, 7, true));
        let r = parse_request("del a c").expect("del");
        let Some(Op::RequestDeleteRange(d)) = r.request else {
            panic!("not a del")
        };
        assert_eq!(
            (d.key.as_slice(), d.range_end.as_slice()),
            (&b"a"[..], &b"c"[..])
        );
        for (line, needle) in [
            ("pat k v", "unknown request \"pat\""),
            ("put k", "a key and a value"),
            ("get", "needs a key"),
            ("get k --bogus", "unknown flag --bogus"),
            ("get k --limit", "needs a value"),
            ("get k --limit=-1", "not a number"),
            ("get k z --prefix", "cannot be combined"),
            ("put k v --lease=xyz", "lease id"),
            ("put k \"v", "unterminated"),
        ] {
            let err = parse_request(line).expect_err(line);
            assert!(err.contains(needle), "{line}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn sections_split_at_blank_lines() {
        let txn =
            parse_txn("value(\"k\") = \"v\"\nmod(\"k\") > \"1\"\n\nput k w\nget k\n\ndel k\n")
                .expect("txn");
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure.len(), 1);
        let only_success = parse_txn("\nput k v\n").expect("no comparisons");
        assert!(only_success.compare.is_empty());
        assert_eq!(only_success.success.len(), 1);
        assert!(only_success.failure.is_empty());
        let crlf = parse_txn("create(\"k\") = \"0\"\r\n\r\nput k v\r\n\r\n\r\n").expect("crlf");
        assert_eq!((crlf.compare.len(), crlf.success.len()), (1, 1));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_txn("value(\"k\") = \"v\"\n\nput k v\nfrob k\n").expect_err("bad request");
        assert_eq!(err.line, 4);
        assert!(
            err.to_string()
                .starts_with("transaction line 4: unknown request"),
            "{err}"
        );
        let err = parse_txn("\n\n\nput k v\n").expect_err("text after the failure section");
        assert_eq!(err.line, 4);
        let err = parse_txn("put k v\n").expect_err("a request where a comparison belongs");
        assert_eq!(err.line, 1);
        assert!(err.reason.contains("malformed comparison"), "{err}");
    }
}
