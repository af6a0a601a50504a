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
    let data = Data::new(bytes, Context::new_dbus(e, 0));
    // SAFETY: zbus marks this unsafe because the bytes are not known to be valid D-Bus; it
    // checks the header as it reads it and reports what it cannot read as an error. Bodies are
    // read later through its checked deserializer.
    let msg = unsafe { Message::from_bytes(data) }
        .map_err(|e| FrameError(format!("bad message: {e}")))?;
    // zbus checks the header fields when it first reads them, but some malformed encodings
    // (a field whose value has the wrong D-Bus type) pass that check and make it panic when it
    // reads them again, which every `header()` call does; found by the fuzzing test below. Read
    // them once here, where a panic only means "malformed".
    let readable = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let h = msg.header();
        (
            h.path().is_some(),
            h.interface().is_some(),
            h.member().is_some(),
        )
    }))
    .is_ok();
    if !readable {
        return Err(FrameError("bad message: malformed header field".into()));
    }
    Ok(msg)
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
