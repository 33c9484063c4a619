//! PostgreSQL binary COPY tuples (no signature, no trailer: the writer adds those once per
//! batch), each field as psycopg's binary dumpers write it under `set_types`.

/// A payload written item after item and sealed into segments of about `SEGMENT` bytes at
/// item boundaries, so that the Python side can copy it into its `bytes` one segment at a time,
/// freeing each as it goes (`python::joined`): the payload is then never held twice over.
/// Items are written into `data`, the open segment; an item never spans two segments.
#[derive(Debug, Default)]
pub struct Segments {
    pub data: Vec<u8>,
    sealed: Vec<Vec<u8>>,
    sealed_len: usize,
}

/// 1 MiB: the hand-over's transient is about one segment (twice: Rust's and its Python copy).
pub const SEGMENT: usize = 1 << 20;

impl Segments {
    /// Where the next item starts in the whole payload; seals the open segment first when it
    /// is full (a fresh one has room for an item of up to `SEGMENT` without growing).
    pub fn begin_item(&mut self) -> u64 {
        if self.data.len() >= SEGMENT {
            let full = std::mem::replace(&mut self.data, Vec::with_capacity(2 * SEGMENT));
            self.sealed_len += full.len();
            self.sealed.push(full);
        }
        (self.sealed_len + self.data.len()) as u64
    }

    /// Drops what follows *start* (an offset `begin_item` gave since the last seal).
    pub fn truncate(&mut self, start: u64) {
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        self.data.truncate(start.saturating_sub(self.sealed_len));
    }

    pub fn len(&self) -> usize {
        self.sealed_len + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments in order (empty ones left out).
    pub fn into_segments(self) -> Vec<Vec<u8>> {
        let mut out = self.sealed;
        if !self.data.is_empty() {
            out.push(self.data);
        }
        out
    }

    /// The whole payload in one buffer (tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for segment in &self.sealed {
            out.extend_from_slice(segment);
        }
        out.extend_from_slice(&self.data);
        out
    }
}

/// The tuples of one part, and where each starts (a COPY error's line -> the row).
#[derive(Debug, Default)]
pub struct CopyRows {
    pub buf: Segments,
    pub offsets: Vec<u64>,
}

impl CopyRows {
    pub fn rows(&self) -> usize {
        self.offsets.len()
    }

    pub fn begin_row(&mut self, fields: i16) {
        self.offsets.push(self.buf.begin_item());
        self.buf.data.extend_from_slice(&fields.to_be_bytes());
    }

    /// Drops the row begun last (a record refused after its row was started).
    pub fn abandon_row(&mut self) {
        if let Some(start) = self.offsets.pop() {
            self.buf.truncate(start);
        }
    }

    pub fn null(&mut self) {
        self.buf.data.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn int8(&mut self, value: i64) {
        self.buf.data.extend_from_slice(&8i32.to_be_bytes());
        self.buf.data.extend_from_slice(&value.to_be_bytes());
    }

    pub fn int4(&mut self, value: i32) {
        self.buf.data.extend_from_slice(&4i32.to_be_bytes());
        self.buf.data.extend_from_slice(&value.to_be_bytes());
    }

    pub fn int2(&mut self, value: i16) {
        self.buf.data.extend_from_slice(&2i32.to_be_bytes());
        self.buf.data.extend_from_slice(&value.to_be_bytes());
    }

    pub fn float8(&mut self, value: f64) {
        self.buf.data.extend_from_slice(&8i32.to_be_bytes());
        self.buf
            .data
            .extend_from_slice(&value.to_bits().to_be_bytes());
    }

    pub fn bool(&mut self, value: bool) {
        self.buf.data.extend_from_slice(&1i32.to_be_bytes());
        self.buf.data.push(u8::from(value));
    }

    /// text and bytea: the bytes themselves.
    pub fn bytes(&mut self, value: &[u8]) {
        let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
        self.buf.data.extend_from_slice(&len.to_be_bytes());
        self.buf.data.extend_from_slice(value);
    }

    /// Starts a field whose length is known once written: returns where to `end_field`.
    pub fn begin_field(&mut self) -> usize {
        let at = self.buf.data.len();
        self.buf.data.extend_from_slice(&[0; 4]);
        at
    }

    pub fn end_field(&mut self, at: usize) {
        let len = i32::try_from(self.buf.data.len() - at - 4).unwrap_or(i32::MAX);
        self.buf.data[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_tuples_with_lengths() {
        let mut rows = CopyRows::default();
        rows.begin_row(2);
        rows.int2(-2);
        rows.null();
        rows.begin_row(1);
        let at = rows.begin_field();
        rows.buf.data.extend_from_slice(b"abc");
        rows.end_field(at);
        assert_eq!(rows.offsets, vec![0, 12]);
        assert_eq!(
            &rows.buf.data[..12],
            &[0, 2, 0, 0, 0, 2, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(&rows.buf.data[12..], &[0, 1, 0, 0, 0, 3, b'a', b'b', b'c']);
        rows.abandon_row();
        assert_eq!(rows.rows(), 1);
    }

    #[test]
    fn seals_full_segments_at_row_boundaries() {
        let mut rows = CopyRows::default();
        let big = vec![7u8; SEGMENT];
        rows.begin_row(1);
        rows.bytes(&big);
        rows.begin_row(1);
        rows.int2(3);
        rows.begin_row(1);
        rows.int2(4);
        let whole = rows.buf.to_vec();
        let second = usize::try_from(rows.offsets[1]).unwrap();
        assert_eq!(
            rows.offsets,
            vec![0, SEGMENT as u64 + 6, SEGMENT as u64 + 14]
        );
        assert_eq!(&whole[second..second + 8], &[0, 1, 0, 0, 0, 2, 0, 3]);
        rows.abandon_row();
        assert_eq!(rows.buf.len(), SEGMENT + 14);
        let segments = rows.buf.into_segments();
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].len(), SEGMENT + 6);
        assert_eq!(segments.concat(), whole[..SEGMENT + 14]);
    }
}
