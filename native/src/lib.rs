//! ingestd's compiled codec: a request's decompressed OTLP bytes in, what the sinks send out
//! (PostgreSQL binary COPY rows for traces and metrics), in one pass and without a Python
//! object per record. The Python converters in `ingestd/convert/` are the reference; the
//! modules here mirror them one to one (`common`, `identity`, `traces`), over a shared wire
//! reader (`wire`) and writers (`json`, `copy`). `python` is the PyO3 binding.

pub mod common;
pub mod copy;
pub mod identity;
pub mod json;
pub mod logs;
pub mod metrics;
pub mod otlp_json;
#[rustfmt::skip]
pub mod otlp_json_schema;
pub mod traces;
pub mod wire;

#[cfg(feature = "python")]
mod python;

/// One request's output: the rows, the dimension rows it introduces, what it refused.
#[derive(Debug, Default)]
pub struct Converted {
    pub copy: copy::CopyRows,
    pub dimensions: common::Dimensions,
    pub rejects: common::Rejects,
    pub items: usize,
    pub nul_replaced: usize,
}
