//! Message framing on a D-Bus stream: where one message ends, and turning its bytes into a
//! zbus [`Message`] to read its header (zbus does the parsing; this only finds the boundary).

use std::num::NonZeroU32;

use zbus::message::Message;
use zbus::zvariant::serialized::{Context, Data};
use zbus::zvariant::Endian;

/// The largest message the specification allows (128 MiB).
pub const MAX_MESSAGE: usize = 128 << 20;

/// The fixed part of every header: endianness, type, flags, version, body length, serial, and
/// the length of the header-field array.
const FIXED: usize = 16;

/// Why a stream is not valid D-Bus: the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn endian(b: u8) -> Result<Endian, FrameError> {
    match b {
        b'l' => Ok(Endian::Little),
        b'B' => Ok(Endian::Big),
        _ => Err(FrameError(format!("bad endianness byte {b:#04x}"))),
    }
}

fn read_u32(e: Endian, b: &[u8]) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    match e {
        Endian::Little => u32::from_le_bytes(a),
        Endian::Big => u32::from_be_bytes(a),
    }
}

/// The length of the message at the start of `buf`, once its fixed header is there.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < FIXED {
        return Ok(None);
    }
    let e = endian(buf[0])?;
    if buf[3] != 1 {
        return Err(FrameError(format!("unknown protocol version {}", buf[3])));
    }
    let body = read_u32(e, &buf[4..8]) as usize;
    let fields = read_u32(e, &buf[12..16]) as usize;
    let header = FIXED
        .checked_add(fields)
        .ok_or_else(|| FrameError("header too long".into()))?;
    let total = header
        .checked_add((8 - header % 8) % 8)
        .and_then(|h| h.checked_add(body))
        .filter(|t| *t <= MAX_MESSAGE)
        .ok_or_else(|| FrameError(format!("message longer than {MAX_MESSAGE} bytes")))?;
    Ok(Some(total))
}

/// Reads one whole message (as returned by [`message_len`]). The header is checked by zbus;
/// the body is read only by whoever needs it.
pub fn parse(bytes: Vec<u8>) -> Result<Message, FrameError> {
    let e = endian(
        *bytes
            .first()
            .ok_or_else(|| FrameError("empty message".into()))?,
    )?;
    if bytes.len() >= 12 && read_u32(e, &bytes[8..12]) == 0 {
        return Err(FrameError("a message with serial 0".into()));
    }
    match message_len(&bytes)? {
        Some(len) if len == bytes.len() => {}
        _ => return Err(FrameError("bad message: truncated".into())),
    }
    check_fields(&bytes, e)?;
    let data = Data::new(bytes, Context::new_dbus(e, 0));
    // SAFETY: zbus marks this unsafe because the bytes are not known to be valid D-Bus; it
    // checks the header as it reads it and reports what it cannot read as an error, and
    // `check_fields` has made sure every field it re-reads later has the type it expects.
    // Bodies are read later through its checked deserializer.
    unsafe { Message::from_bytes(data) }.map_err(|e| FrameError(format!("bad message: {e}")))
}

/// Checks that each known header field has the D-Bus type the specification gives it, with a
/// valid value. zbus accepts some mismatches (an interface given as an object path, say) when
/// it first reads the header and then panics when it reads the field again, which every
/// `Message::header()` does; found by fuzzing (core/fuzz). The walk itself is zbus's.
fn check_fields(bytes: &[u8], e: Endian) -> Result<(), FrameError> {
    // The usual header (known fields of their usual types) is checked by a direct walk; only
    // an unusual one (an unknown field, say) goes through zbus's generic reader, at twice the
    // cost per message (benches/busproxy.sh).
    match quick_check(bytes, e) {
        Some(r) => r,
        None => generic_check(bytes, e),
    }
}

fn valid_field(code: u8, value: &str) -> bool {
    use zbus::names::{BusName, ErrorName, InterfaceName, MemberName, UniqueName};
    match code {
        1 => zbus::zvariant::ObjectPath::try_from(value).is_ok(),
        2 => InterfaceName::try_from(value).is_ok(),
        3 => MemberName::try_from(value).is_ok(),
        4 => ErrorName::try_from(value).is_ok(),
        6 => BusName::try_from(value).is_ok(),
        7 => UniqueName::try_from(value).is_ok(),
        8 => zbus::zvariant::Signature::try_from(value).is_ok(),
        _ => false,
    }
}

fn field_name(code: u8) -> &'static str {
    match code {
        1 => "path",
        2 => "interface",
        3 => "member",
        4 => "error name",
        5 => "reply serial",
        6 => "destination",
        7 => "sender",
        8 => "signature",
        _ => "descriptor count",
    }
}

/// Walks the header-field array itself: Some(verdict) for a header made only of the nine
/// known fields, each of its specified type; None for anything else (left to zbus).
fn quick_check(b: &[u8], e: Endian) -> Option<Result<(), FrameError>> {
    let bad = |what: &str| {
        Some(Err(FrameError(format!(
            "bad message: malformed {what} field"
        ))))
    };
    let len = read_u32(e, b.get(12..16)?) as usize;
    let end = 16usize.checked_add(len)?;
    if end > b.len() {
        return None;
    }
    let mut at = 16;
    let mut seen = [false; 10];
    while at < end {
        at = at.checked_add((8 - at % 8) % 8)?;
        let code = *b.get(at)?;
        let sig_len = *b.get(at + 1)?;
        if sig_len != 1 || *b.get(at + 3)? != 0 {
            return None;
        }
        let ty = *b.get(at + 2)?;
        at += 4;
        let expected = match code {
            1 => b'o',
            2 | 3 | 4 | 6 | 7 => b's',
            5 | 9 => b'u',
            8 => b'g',
            _ => return None,
        };
        if ty != expected {
            return bad(field_name(code));
        }
        if std::mem::replace(&mut seen[usize::from(code)], true) {
            return bad("repeated");
        }
        let text = match ty {
            b'u' => {
                at = at.checked_add((4 - at % 4) % 4)?;
                b.get(at..at + 4)?;
                at += 4;
                continue;
            }
            b'g' => {
                let n = usize::from(*b.get(at)?);
                let t = b.get(at + 1..at + 1 + n)?;
                if *b.get(at + 1 + n)? != 0 {
                    return None;
                }
                at += n + 2;
                t
            }
            _ => {
                at = at.checked_add((4 - at % 4) % 4)?;
                let n = read_u32(e, b.get(at..at + 4)?) as usize;
                let t = b.get(at + 4..at.checked_add(4)?.checked_add(n)?)?;
                if *b.get(at + 4 + n)? != 0 {
                    return None;
                }
                at += n + 5;
                t
            }
        };
        match std::str::from_utf8(text) {
            Ok(t) if valid_field(code, t) => {}
            _ => return bad(field_name(code)),
        }
    }
    (at == end).then_some(Ok(()))
}

/// The same check through zbus's generic reader, for headers [`quick_check`] leaves alone.
fn generic_check(bytes: &[u8], e: Endian) -> Result<(), FrameError> {
    use zbus::names::{BusName, ErrorName, InterfaceName, MemberName, UniqueName};
    use zbus::zvariant::Value;
    let bad = |what: &str| FrameError(format!("bad message: malformed {what} field"));
    let data = Data::new(bytes, Context::new_dbus(e, 0));
    let header = data.slice(12..);
    let (fields, _): (Vec<(u8, Value<'_>)>, _) = header
        .deserialize()
        .map_err(|e| FrameError(format!("bad message: {e}")))?;
    let mut seen = [false; 10];
    for (code, value) in &fields {
        if let Some(s) = seen
            .get_mut(usize::from(*code))
            .filter(|_| (1..=9).contains(code))
        {
            if *s {
                return Err(bad("repeated"));
            }
            *s = true;
        }
        let ok = match (code, value) {
            (1, Value::ObjectPath(p)) => zbus::zvariant::ObjectPath::try_from(p.as_str()).is_ok(),
            (2, Value::Str(s)) => InterfaceName::try_from(s.as_str()).is_ok(),
            (3, Value::Str(s)) => MemberName::try_from(s.as_str()).is_ok(),
            (4, Value::Str(s)) => ErrorName::try_from(s.as_str()).is_ok(),
            (5 | 9, Value::U32(_)) => true,
            (6, Value::Str(s)) => BusName::try_from(s.as_str()).is_ok(),
            (7, Value::Str(s)) => UniqueName::try_from(s.as_str()).is_ok(),
            (8, Value::Signature(_)) => true,
            (1..=9, _) => false,
            // Unknown fields are to be ignored, whatever their type.
            _ => true,
        };
        if !ok {
            return Err(bad(field_name(*code)));
        }
    }
    Ok(())
}

/// A message's serial.
pub fn serial(m: &Message) -> NonZeroU32 {
    m.primary_header().serial_num()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Message {
        Message::method_call("/org/freedesktop/DBus", "Hello")
            .unwrap()
            .destination("org.freedesktop.DBus")
            .unwrap()
            .interface("org.freedesktop.DBus")
            .unwrap()
            .build(&())
            .unwrap()
    }

    #[test]
    fn lengths_of_both_endiannesses() {
        for e in [Endian::Little, Endian::Big] {
            let m = Message::method_call("/a", "M")
                .unwrap()
                .destination("org.x.Y")
                .unwrap()
                .endian(e)
                .build(&("hello", 7u32))
                .unwrap();
            let bytes = m.data().to_vec();
            assert_eq!(message_len(&bytes).unwrap(), Some(bytes.len()));
            assert_eq!(message_len(&bytes[..15]).unwrap(), None);
            let back = parse(bytes).unwrap();
            assert_eq!(back.header().member().unwrap().as_str(), "M");
            let (s, n): (String, u32) = back.body().deserialize().unwrap();
            assert_eq!((s.as_str(), n), ("hello", 7));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut bytes = call().data().to_vec();
        assert!(parse(bytes.clone()).is_ok());
        bytes[0] = b'x';
        assert!(message_len(&bytes).is_err());
        let mut v2 = call().data().to_vec();
        v2[3] = 2;
        assert!(message_len(&v2).is_err());
        let mut huge = call().data().to_vec();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(message_len(&huge).is_err());
        let mut zero = call().data().to_vec();
        zero[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(parse(zero).is_err());
        // Every truncation of a valid header parses or fails cleanly.
        let whole = call().data().to_vec();
        for n in 0..whole.len() {
            let _ = parse(whole[..n].to_vec());
        }
    }
}
