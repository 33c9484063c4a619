//! The protobuf wire format, read in place: fields borrow from the request bytes.
//!
//! Mirrors what upb (the Python reference's parser) accepts: a field whose wire type does not
//! match its declaration is an unknown field, groups are skipped whole, a message may nest at
//! most `MAX_DEPTH` levels (the root included) and every `string` field must be UTF-8.

use std::fmt;

/// The largest field number protobuf allows (2^29 - 1); upb refuses larger ones.
pub const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// upb's default depth limit (`kUpb_WireFormat_DefaultDepthLimit`), root message included.
pub const MAX_DEPTH: u32 = 100;

pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const START_GROUP: u8 = 3;
pub const END_GROUP: u8 = 4;
pub const FIXED32: u8 = 5;

/// Why bytes are not a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Malformed,
    BadUtf8,
    TooDeep,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Malformed => "malformed protobuf",
            DecodeError::BadUtf8 => "String field had bad UTF-8",
            DecodeError::TooDeep => "Exceeded upb_DecodeOptions_MaxDepth",
        })
    }
}

pub type Result<T> = std::result::Result<T, DecodeError>;

/// One field as read: its number, wire type, value, and its whole encoding (tag included).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub wire: u8,
    /// Varint and fixed values; 0 for the others.
    pub int: u64,
    /// Length-delimited payload; empty for the others.
    pub bytes: &'a [u8],
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    pub fn text(&self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes).map_err(|_| DecodeError::BadUtf8)
    }
}

/// Iterates over the fields of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value: u64 = 0;
        for shift in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(DecodeError::Malformed)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * shift);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Malformed)?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::Malformed)?;
        self.pos = end;
        Ok(out)
    }

    /// The next field, or None at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<Field<'a>>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        let tag = self.varint()?;
        if tag >> 3 == 0 || tag >> 3 > MAX_FIELD_NUMBER {
            return Err(DecodeError::Malformed);
        }
        let number = (tag >> 3) as u32;
        let wire = (tag & 7) as u8;
        let mut field = Field {
            number,
            wire,
            int: 0,
            bytes: &[],
            raw: &[],
        };
        match wire {
            VARINT => field.int = self.varint()?,
            FIXED64 => field.int = u64::from_le_bytes(self.take(8)?.try_into().unwrap_or([0; 8])),
            FIXED32 => {
                field.int = u64::from(u32::from_le_bytes(
                    self.take(4)?.try_into().unwrap_or([0; 4]),
                ));
            }
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Malformed)?;
                field.bytes = self.take(len)?;
            }
            START_GROUP => self.skip_group(number, 1)?,
            _ => return Err(DecodeError::Malformed),
        }
        field.raw = &self.buf[start..self.pos];
        Ok(Some(field))
    }

    fn skip_group(&mut self, number: u32, depth: u32) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        loop {
            let tag = self.varint()?;
            // upb skips a group's fields by wire type alone: field number 0 passes there.
            if tag >> 3 > MAX_FIELD_NUMBER {
                return Err(DecodeError::Malformed);
            }
            let inner = (tag >> 3) as u32;
            match (tag & 7) as u8 {
                VARINT => {
                    self.varint()?;
                }
                FIXED64 => {
                    self.take(8)?;
                }
                FIXED32 => {
                    self.take(4)?;
                }
                LEN => {
                    let len =
                        usize::try_from(self.varint()?).map_err(|_| DecodeError::Malformed)?;
                    self.take(len)?;
                }
                START_GROUP => self.skip_group(inner, depth + 1)?,
                END_GROUP if inner == number => return Ok(()),
                _ => return Err(DecodeError::Malformed),
            }
        }
    }
}

/// Every field of *buf*, checked: malformed bytes fail here, before any output.
pub fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>> {
    let mut reader = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(field) = reader.next_field()? {
        out.push(field);
    }
    Ok(out)
}

/// Appends a varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn put_tag(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

pub fn put_len(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_tag(out, number, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_keeps_their_encoding() {
        let buf = [0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i'];
        let got = fields(&buf).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].number, got[0].int), (1, 150));
        assert_eq!(got[1].bytes, b"hi");
        assert_eq!(got[1].raw, &buf[3..]);
    }

    #[test]
    fn refuses_truncated_and_field_zero() {
        assert_eq!(
            fields(&[0x12, 0x05, b'a']).unwrap_err(),
            DecodeError::Malformed
        );
        assert_eq!(fields(&[0x00, 0x01]).unwrap_err(), DecodeError::Malformed);
    }

    #[test]
    fn refuses_field_numbers_beyond_2_pow_29() {
        // field 2^29 (varint tag 0x80 0x80 0x80 0x80 0x10), wire type 0
        assert_eq!(
            fields(&[0x80, 0x80, 0x80, 0x80, 0x10, 0x01]).unwrap_err(),
            DecodeError::Malformed
        );
        assert!(fields(&[0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01]).is_ok());
    }

    #[test]
    fn groups_may_hold_field_number_zero_as_upb_skips_them() {
        // group 1 { field 0 varint 26 } -- upb accepts it (found by the differential fuzz)
        assert_eq!(fields(&[0x0b, 0x00, 0x1a, 0x0c]).unwrap().len(), 1);
        assert!(fields(&[0x0b, 0x00, 0x0c]).is_err());
    }

    #[test]
    fn skips_groups() {
        let buf = [0x0b, 0x10, 0x01, 0x0c, 0x18, 0x02];
        let got = fields(&buf).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].int, 2);
    }

    #[test]
    fn field_zero_fixed32_in_a_group_but_never_at_the_top_level() {
        // As upb: `0b 05 <4 bytes> 0c` parses, a top-level field 0 does not.
        let grouped = [0x0b, 0x05, 0x10, 0x80, 0x80, 0x80, 0x0c];
        assert_eq!(fields(&grouped).unwrap().len(), 1);
        assert!(fields(&[0x05, 0, 0, 0, 0]).is_err());
    }
}
