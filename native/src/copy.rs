//! PostgreSQL binary COPY tuples (no signature, no trailer: the writer adds those once per
//! batch), each field as psycopg's binary dumpers write it under `set_types`.

/// The tuples of one part, and where each starts (a COPY error's line -> the row).
#[derive(Debug, Default)]
pub struct CopyRows {
    pub data: Vec<u8>,
    pub offsets: Vec<u64>,
}

impl CopyRows {
    /// Rows for a request of *request_bytes*, the buffer reserved at *ratio* times its size
    /// (pages cost nothing until written). Growing by doubling instead costs metrics ~20 % more
    /// CPU per 8 MiB request and, when malloc serves the blocks from its heap (after a large
    /// free raised glibc's mmap threshold), a copy each time. Logs do not reserve: their
    /// ~4x estimate passes glibc's 32 MiB mmap ceiling, and a fresh mapping per request cost
    /// more in page faults (+20 % CPU) than it saved (docs/native.md#parse-memory).
    pub fn reserved(request_bytes: usize, ratio: usize) -> Self {
        CopyRows {
            data: Vec::with_capacity(request_bytes.saturating_mul(ratio)),
            offsets: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.offsets.len()
    }

    pub fn begin_row(&mut self, fields: i16) {
        self.offsets.push(self.data.len() as u64);
        self.data.extend_from_slice(&fields.to_be_bytes());
    }

    /// Drops the row begun last (a record refused after its row was started).
    pub fn abandon_row(&mut self) {
        if let Some(start) = self.offsets.pop() {
            self.data.truncate(usize::try_from(start).unwrap_or(0));
        }
    }

    pub fn null(&mut self) {
        self.data.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn int8(&mut self, value: i64) {
        self.data.extend_from_slice(&8i32.to_be_bytes());
        self.data.extend_from_slice(&value.to_be_bytes());
    }

    pub fn int4(&mut self, value: i32) {
        self.data.extend_from_slice(&4i32.to_be_bytes());
        self.data.extend_from_slice(&value.to_be_bytes());
    }

    pub fn int2(&mut self, value: i16) {
        self.data.extend_from_slice(&2i32.to_be_bytes());
        self.data.extend_from_slice(&value.to_be_bytes());
    }

    pub fn float8(&mut self, value: f64) {
        self.data.extend_from_slice(&8i32.to_be_bytes());
        self.data.extend_from_slice(&value.to_bits().to_be_bytes());
    }

    pub fn bool(&mut self, value: bool) {
        self.data.extend_from_slice(&1i32.to_be_bytes());
        self.data.push(u8::from(value));
    }

    /// text and bytea: the bytes themselves.
    pub fn bytes(&mut self, value: &[u8]) {
        let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
        self.data.extend_from_slice(&len.to_be_bytes());
        self.data.extend_from_slice(value);
    }

    /// Starts a field whose length is known once written: returns where to `end_field`.
    pub fn begin_field(&mut self) -> usize {
        let at = self.data.len();
        self.data.extend_from_slice(&[0; 4]);
        at
    }

    pub fn end_field(&mut self, at: usize) {
        let len = i32::try_from(self.data.len() - at - 4).unwrap_or(i32::MAX);
        self.data[at..at + 4].copy_from_slice(&len.to_be_bytes());
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
        rows.data.extend_from_slice(b"abc");
        rows.end_field(at);
        assert_eq!(rows.offsets, vec![0, 12]);
        assert_eq!(
            &rows.data[..12],
            &[0, 2, 0, 0, 0, 2, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(&rows.data[12..], &[0, 1, 0, 0, 0, 3, b'a', b'b', b'c']);
        rows.abandon_row();
        assert_eq!(rows.rows(), 1);
    }
}
