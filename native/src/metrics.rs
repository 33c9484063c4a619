//! OTLP metrics -> binary COPY rows of the `metrics` table, one per data point, mirroring
//! `ingestd/convert/metrics.py` (column order, rejects and their order, NUL handling).

use crate::common::{
    self, add_resource, add_scope, clean_text, each_field, hex, int32_of, int4_bits, key_value,
    time_problem, Attributes, Context, Example, INT64_MAX, PG_EPOCH_US,
};
use crate::json::{Object, Value};
use crate::wire::{DecodeError, Field, Result, FIXED64, LEN, VARINT};
use crate::Converted;

const COLUMNS: i16 = 31;
const FLOAT8_OID: u32 = 701;
const INT8_OID: u32 = 20;
// Nesting levels: request 1, ResourceMetrics 2, Resource / ScopeMetrics 3, scope / Metric 4,
// data 5, point 6, exemplar 7, its KeyValues 8.
const RESOURCE_DEPTH: u32 = 3;
const SCOPE_DEPTH: u32 = 4;
const METADATA_DEPTH: u32 = 5;
const EXEMPLAR_ATTRIBUTE_DEPTH: u32 = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Sum,
    Histogram,
    Exponential,
    Summary,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Sum => "sum",
            Kind::Histogram => "histogram",
            Kind::Exponential => "exponential_histogram",
            Kind::Summary => "summary",
        }
    }

    fn of_field(number: u32) -> Option<Kind> {
        match number {
            5 => Some(Kind::Gauge),
            7 => Some(Kind::Sum),
            9 => Some(Kind::Histogram),
            10 => Some(Kind::Exponential),
            11 => Some(Kind::Summary),
            _ => None,
        }
    }

    /// The field number of `attributes` in this kind's data point.
    fn attributes_field(self) -> u32 {
        match self {
            Kind::Gauge | Kind::Sum | Kind::Summary => 7,
            Kind::Histogram => 9,
            Kind::Exponential => 1,
        }
    }
}

#[derive(Clone, Copy)]
enum Number {
    Double(f64),
    Int(i64),
}

struct Exemplar {
    time_unix_nano: u64,
    value: Option<Number>,
    span_id: String,
    trace_id: String,
    filtered_attributes: Object,
}

#[derive(Default)]
struct Point<'a> {
    attributes: Vec<&'a [u8]>,
    start: u64,
    time: u64,
    value: Option<Number>,
    exemplars: Vec<Exemplar>,
    flags: u32,
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bucket_counts: Vec<u64>,
    explicit_bounds: Vec<f64>,
    scale: i32,
    zero_count: u64,
    zero_threshold: f64,
    positive: (i32, Vec<u64>),
    negative: (i32, Vec<u64>),
    quantiles: Vec<f64>,
    quantile_values: Vec<f64>,
}

fn f64_of(f: &Field<'_>) -> f64 {
    f64::from_bits(f.int)
}

fn sint32_of(value: u64) -> i32 {
    let v = value as u32;
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// A repeated fixed64 / double field, packed or not.
fn fixed64s(f: &Field<'_>, out: &mut Vec<u64>) -> Result<()> {
    if f.wire == FIXED64 {
        out.push(f.int);
        return Ok(());
    }
    if !f.bytes.len().is_multiple_of(8) {
        return Err(DecodeError::Malformed);
    }
    out.extend(
        f.bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
    );
    Ok(())
}

/// A repeated varint field, packed or not.
fn varints(f: &Field<'_>, out: &mut Vec<u64>) -> Result<()> {
    if f.wire == VARINT {
        out.push(f.int);
        return Ok(());
    }
    let mut at = 0;
    let bytes = f.bytes;
    while at < bytes.len() {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = *bytes.get(at).ok_or(DecodeError::Malformed)?;
            at += 1;
            if shift >= 70 {
                return Err(DecodeError::Malformed);
            }
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                break;
            }
        }
        out.push(value);
    }
    Ok(())
}

fn is_fixed64(f: &Field<'_>) -> bool {
    f.wire == FIXED64 || f.wire == LEN
}

fn is_varint(f: &Field<'_>) -> bool {
    f.wire == VARINT || f.wire == LEN
}

fn exemplar(bytes: &[u8]) -> Result<Exemplar> {
    let mut pairs = Vec::new();
    let mut out = Exemplar {
        time_unix_nano: 0,
        value: None,
        span_id: String::new(),
        trace_id: String::new(),
        filtered_attributes: Object::new(),
    };
    let (mut span_id, mut trace_id): (&[u8], &[u8]) = (&[], &[]);
    each_field(&[bytes], |f| {
        match (f.number, f.wire) {
            (7, LEN) => pairs.push(key_value(&[f.bytes], EXEMPLAR_ATTRIBUTE_DEPTH)?),
            (2, FIXED64) => out.time_unix_nano = f.int,
            (3, FIXED64) => out.value = Some(Number::Double(f64_of(&f))),
            (6, FIXED64) => out.value = Some(Number::Int(f.int as i64)),
            (4, LEN) => span_id = f.bytes,
            (5, LEN) => trace_id = f.bytes,
            _ => {}
        }
        Ok(())
    })?;
    out.span_id = hex(span_id);
    out.trace_id = hex(trace_id);
    out.filtered_attributes = common::dict(pairs);
    Ok(out)
}

fn buckets(chunks: &[&[u8]]) -> Result<(i32, Vec<u64>)> {
    let mut out = (0, Vec::new());
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, VARINT) => out.0 = sint32_of(f.int),
            (2, _) if is_varint(&f) => varints(&f, &mut out.1)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// One data point of *kind*, every field checked as upb checks the request.
fn point(kind: Kind, bytes: &[u8]) -> Result<Point<'_>> {
    let mut p = Point::default();
    let attributes = kind.attributes_field();
    let (mut positive, mut negative): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
    each_field(&[bytes], |f| {
        if (f.number, f.wire) == (attributes, LEN) {
            p.attributes.push(f.bytes);
            return Ok(());
        }
        match (f.number, f.wire) {
            (2, FIXED64) => p.start = f.int,
            (3, FIXED64) => p.time = f.int,
            _ => {}
        }
        match kind {
            Kind::Gauge | Kind::Sum => match (f.number, f.wire) {
                (4, FIXED64) => p.value = Some(Number::Double(f64_of(&f))),
                (6, FIXED64) => p.value = Some(Number::Int(f.int as i64)),
                (5, LEN) => p.exemplars.push(exemplar(f.bytes)?),
                (8, VARINT) => p.flags = f.int as u32,
                _ => {}
            },
            Kind::Histogram => match (f.number, f.wire) {
                (4, FIXED64) => p.count = f.int,
                (5, FIXED64) => p.sum = Some(f64_of(&f)),
                (6, _) if is_fixed64(&f) => fixed64s(&f, &mut p.bucket_counts)?,
                (7, _) if is_fixed64(&f) => {
                    let mut bits = Vec::new();
                    fixed64s(&f, &mut bits)?;
                    p.explicit_bounds
                        .extend(bits.into_iter().map(f64::from_bits));
                }
                (8, LEN) => p.exemplars.push(exemplar(f.bytes)?),
                (10, VARINT) => p.flags = f.int as u32,
                (11, FIXED64) => p.min = Some(f64_of(&f)),
                (12, FIXED64) => p.max = Some(f64_of(&f)),
                _ => {}
            },
            Kind::Exponential => match (f.number, f.wire) {
                (4, FIXED64) => p.count = f.int,
                (5, FIXED64) => p.sum = Some(f64_of(&f)),
                (6, VARINT) => p.scale = sint32_of(f.int),
                (7, FIXED64) => p.zero_count = f.int,
                (8, LEN) => positive.push(f.bytes),
                (9, LEN) => negative.push(f.bytes),
                (10, VARINT) => p.flags = f.int as u32,
                (11, LEN) => p.exemplars.push(exemplar(f.bytes)?),
                (12, FIXED64) => p.min = Some(f64_of(&f)),
                (13, FIXED64) => p.max = Some(f64_of(&f)),
                (14, FIXED64) => p.zero_threshold = f64_of(&f),
                _ => {}
            },
            Kind::Summary => match (f.number, f.wire) {
                (4, FIXED64) => p.count = f.int,
                (5, FIXED64) => p.sum = Some(f64_of(&f)),
                (6, LEN) => {
                    let (mut quantile, mut value) = (0.0, 0.0);
                    each_field(&[f.bytes], |q| {
                        match (q.number, q.wire) {
                            (1, FIXED64) => quantile = f64_of(&q),
                            (2, FIXED64) => value = f64_of(&q),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    p.quantiles.push(quantile);
                    p.quantile_values.push(value);
                }
                (8, VARINT) => p.flags = f.int as u32,
                _ => {}
            },
        }
        Ok(())
    })?;
    if kind == Kind::Exponential {
        p.positive = buckets(&positive)?;
        p.negative = buckets(&negative)?;
    }
    Ok(p)
}

/// A metric's data: its points and, for sums and histograms, temporality and monotonicity.
struct Data<'a> {
    kind: Kind,
    points: Vec<Point<'a>>,
    temporality: i32,
    monotonic: bool,
}

/// Adds one piece of a data message (a repeated singular message merges into the last one).
fn merge_data<'a>(data: &mut Data<'a>, bytes: &'a [u8]) -> Result<()> {
    let kind = data.kind;
    each_field(&[bytes], |f| {
        match (f.number, f.wire) {
            (1, LEN) => data.points.push(point(kind, f.bytes)?),
            (2, VARINT) if kind != Kind::Gauge && kind != Kind::Summary => {
                data.temporality = int32_of(f.int);
            }
            (3, VARINT) if kind == Kind::Sum => data.monotonic = f.int != 0,
            _ => {}
        }
        Ok(())
    })
}

struct Metric<'a> {
    name: &'a str,
    description: &'a str,
    unit: &'a str,
    data: Option<Data<'a>>,
}

fn metric(bytes: &[u8]) -> Result<Metric<'_>> {
    let mut m = Metric {
        name: "",
        description: "",
        unit: "",
        data: None,
    };
    each_field(&[bytes], |f| {
        match (f.number, f.wire) {
            (1, LEN) => m.name = f.text()?,
            (2, LEN) => m.description = f.text()?,
            (3, LEN) => m.unit = f.text()?,
            (12, LEN) => {
                key_value(&[f.bytes], METADATA_DEPTH)?;
            }
            (number, LEN) => {
                if let Some(kind) = Kind::of_field(number) {
                    if m.data.as_ref().is_none_or(|d| d.kind != kind) {
                        m.data = Some(Data {
                            kind,
                            points: Vec::new(),
                            temporality: 0,
                            monotonic: false,
                        });
                    }
                    if let Some(data) = m.data.as_mut() {
                        merge_data(data, f.bytes)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(m)
}

struct ScopeMetrics<'a> {
    scope: Vec<&'a [u8]>,
    /// Each metric's bytes, checked: read again into a `Metric` when its rows are written, so
    /// that a request's point views never exist all at once.
    metrics: Vec<&'a [u8]>,
    schema_url: &'a str,
}

struct ResourceMetrics<'a> {
    resource: Vec<&'a [u8]>,
    scope_metrics: Vec<ScopeMetrics<'a>>,
    schema_url: &'a str,
}

fn request(body: &[u8]) -> Result<Vec<ResourceMetrics<'_>>> {
    let mut out = Vec::new();
    each_field(&[body], |f| {
        if (f.number, f.wire) != (1, LEN) {
            return Ok(());
        }
        let mut rm = ResourceMetrics {
            resource: Vec::new(),
            scope_metrics: Vec::new(),
            schema_url: "",
        };
        each_field(&[f.bytes], |g| {
            match (g.number, g.wire) {
                (1, LEN) => rm.resource.push(g.bytes),
                (2, LEN) => {
                    let mut sm = ScopeMetrics {
                        scope: Vec::new(),
                        metrics: Vec::new(),
                        schema_url: "",
                    };
                    each_field(&[g.bytes], |h| {
                        match (h.number, h.wire) {
                            (1, LEN) => sm.scope.push(h.bytes),
                            (2, LEN) => {
                                metric(h.bytes)?;
                                sm.metrics.push(h.bytes);
                            }
                            (3, LEN) => sm.schema_url = h.text()?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    rm.scope_metrics.push(sm);
                }
                (3, LEN) => rm.schema_url = g.text()?,
                _ => {}
            }
            Ok(())
        })?;
        out.push(rm);
        Ok(())
    })?;
    Ok(out)
}

/// What the points of one metric share.
struct Shared<'s> {
    name: &'s str,
    unit: &'s str,
    kind: Kind,
    app_id: &'s str,
    resource_id: i64,
    scope_id: i64,
    max_time: u64,
    max_buckets: usize,
}

/// One ExportMetricsServiceRequest -> COPY rows for `metrics`, rejects and dimension rows.
pub fn convert(body: &[u8], ctx: &Context) -> Result<Converted> {
    let parsed = request(body)?;
    let mut out = Converted::default();
    let mut attributes = Attributes::default();
    let mut nul = 0;
    let mut scratch = Vec::new();
    for rm in &parsed {
        let (resource, n) = add_resource(
            &mut out.dimensions,
            &rm.resource,
            rm.schema_url,
            RESOURCE_DEPTH,
            ctx,
        )?;
        nul += n;
        for sm in &rm.scope_metrics {
            let (scope_id, n) =
                add_scope(&mut out.dimensions, &sm.scope, sm.schema_url, SCOPE_DEPTH)?;
            nul += n;
            for &raw in &sm.metrics {
                let m = &metric(raw)?;
                let (name, n1) = clean_text(m.name);
                let Some(data) = &m.data else {
                    out.rejects.reject("no_data", || {
                        example(&name, ": no data points type set".into())
                    });
                    continue;
                };
                let (unit, n2) = clean_text(m.unit);
                let (description, n3) = clean_text(m.description);
                nul += n1 + n2 + n3;
                let app_id = resource.application_id.as_str();
                out.dimensions.put_description(
                    (app_id.to_owned(), name.clone()),
                    (data.kind.name().to_owned(), unit.clone(), description),
                );
                let shared = Shared {
                    name: &name,
                    unit: &unit,
                    kind: data.kind,
                    app_id,
                    resource_id: resource.resource_id,
                    scope_id,
                    max_time: ctx.max_time_unix_nano,
                    max_buckets: ctx.max_buckets_per_point,
                };
                points(data, &shared, &mut out, &mut attributes, &mut scratch);
            }
        }
    }
    out.items = out.copy.rows();
    out.nul_replaced = nul + attributes.nul_replaced;
    Ok(out)
}

fn example(name: &str, suffix: String) -> Example {
    Example {
        prefix: "metric ",
        name: Some(name.to_owned()),
        suffix,
    }
}

fn points<'a>(
    data: &Data<'a>,
    m: &Shared<'_>,
    out: &mut Converted,
    attributes: &mut Attributes<'a>,
    scratch: &mut Vec<u8>,
) {
    let temporality = data.temporality;
    if matches!(m.kind, Kind::Sum | Kind::Histogram | Kind::Exponential)
        && i16::try_from(temporality).is_err()
    {
        for _ in &data.points {
            out.rejects.reject("enum_out_of_range", || {
                example(m.name, format!(": aggregation_temporality {temporality}"))
            });
        }
        return;
    }
    for p in &data.points {
        if let Err((reason, detail)) = row(data, p, m, out, attributes, scratch) {
            out.rejects
                .reject(reason, || example(m.name, format!(": {detail}")));
        }
    }
}

type Refusal = (&'static str, String);

fn checked_times(p: &Point<'_>, max_time: u64) -> std::result::Result<(), Refusal> {
    if let Some(problem) = time_problem(p.time, max_time) {
        return Err((problem, format!("time_unix_nano {}", p.time)));
    }
    if p.start > INT64_MAX {
        return Err((
            "timestamp_out_of_range",
            format!("start_time_unix_nano {}", p.start),
        ));
    }
    Ok(())
}

/// A point with more bounds, bucket counts or quantiles than the cap is refused alone.
fn bucket_cap(lists: &[(&str, usize)], max: usize) -> std::result::Result<(), Refusal> {
    for &(what, len) in lists {
        if len > max {
            return Err((
                "too_many_buckets",
                format!("{len} {what}, over {max} (ingest.max_buckets_per_point)"),
            ));
        }
    }
    Ok(())
}

fn count(value: u64, what: &str) -> std::result::Result<i64, Refusal> {
    i64::try_from(value).map_err(|_| {
        (
            "count_out_of_range",
            format!("{what} {value} exceeds bigint"),
        )
    })
}

fn counts(values: &[u64], what: &str) -> std::result::Result<(), Refusal> {
    if values.iter().any(|&v| v > INT64_MAX) {
        return Err((
            "count_out_of_range",
            format!("{what} holds a value beyond bigint"),
        ));
    }
    Ok(())
}

/// PostgreSQL's binary one-dimensional array without NULLs, as a bytea field.
fn array(copy: &mut crate::copy::CopyRows, oid: u32, values: impl ExactSizeIterator<Item = u64>) {
    let at = copy.begin_field();
    let data = &mut copy.buf.data;
    let n = values.len();
    if n == 0 {
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&oid.to_be_bytes());
    } else {
        data.extend_from_slice(&1i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&oid.to_be_bytes());
        data.extend_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes());
        data.extend_from_slice(&1i32.to_be_bytes());
        for bits in values {
            data.extend_from_slice(&8i32.to_be_bytes());
            data.extend_from_slice(&bits.to_be_bytes());
        }
    }
    copy.end_field(at);
}

fn opt_float8(copy: &mut crate::copy::CopyRows, value: Option<f64>) {
    match value {
        Some(v) => copy.float8(v),
        None => copy.null(),
    }
}

fn nulls(copy: &mut crate::copy::CopyRows, n: usize) {
    for _ in 0..n {
        copy.null();
    }
}

/// The exemplars column (jsonb), into *out*; nothing when there are none.
fn exemplars(exemplars: &[Exemplar], attributes: &mut Attributes<'_>, out: &mut Vec<u8>) {
    out.clear();
    if exemplars.is_empty() {
        return;
    }
    let list = exemplars
        .iter()
        .map(|e| {
            let mut object = Object::new();
            object.insert("timeUnixNano".into(), Value::UInt(e.time_unix_nano));
            let value = match e.value {
                None => Value::Null,
                Some(Number::Int(v)) => Value::Int(v),
                Some(Number::Double(v)) => common::double_value(v),
            };
            object.insert("value".into(), value);
            object.insert("spanId".into(), Value::Str(e.span_id.clone()));
            object.insert("traceId".into(), Value::Str(e.trace_id.clone()));
            object.insert(
                "filteredAttributes".into(),
                Value::Object(e.filtered_attributes.clone()),
            );
            Value::Object(object)
        })
        .collect();
    let (json, nul) = common::jsonb(&Value::Array(list));
    attributes.nul_replaced += nul;
    out.extend_from_slice(&json);
}

/// Appends one point's row, or says why it is refused (checks in the reference's order).
fn row<'a>(
    data: &Data<'a>,
    p: &Point<'a>,
    m: &Shared<'_>,
    out: &mut Converted,
    attributes: &mut Attributes<'a>,
    scratch: &mut Vec<u8>,
) -> std::result::Result<(), Refusal> {
    checked_times(p, m.max_time)?;
    let lists: &[(&str, usize)] = match m.kind {
        Kind::Gauge | Kind::Sum => &[],
        Kind::Histogram => &[
            ("explicit_bounds", p.explicit_bounds.len()),
            ("bucket_counts", p.bucket_counts.len()),
        ],
        Kind::Exponential => &[
            ("positive_bucket_counts", p.positive.1.len()),
            ("negative_bucket_counts", p.negative.1.len()),
        ],
        Kind::Summary => &[("quantile_values", p.quantile_values.len())],
    };
    bucket_cap(lists, m.max_buckets)?;
    let mut attrs = Vec::new();
    attributes
        .jsonb(&p.attributes, &mut attrs)
        .map_err(|message| ("bad_attribute", message))?;
    let (mut n_count, mut zero_count) = (0, 0);
    match m.kind {
        Kind::Gauge | Kind::Sum => {}
        Kind::Histogram => {
            n_count = count(p.count, "count")?;
            counts(&p.bucket_counts, "bucket_counts")?;
        }
        Kind::Exponential => {
            n_count = count(p.count, "count")?;
            zero_count = count(p.zero_count, "zero_count")?;
            counts(&p.positive.1, "positive.bucket_counts")?;
            counts(&p.negative.1, "negative.bucket_counts")?;
        }
        Kind::Summary => n_count = count(p.count, "count")?,
    }
    exemplars(&p.exemplars, attributes, scratch);
    let copy = &mut out.copy;
    copy.begin_row(COLUMNS);
    copy.int8(p.time as i64 / 1000 - PG_EPOCH_US);
    copy.bytes(m.app_id.as_bytes());
    copy.bytes(m.name.as_bytes());
    copy.bytes(m.kind.name().as_bytes());
    match (m.kind, p.value) {
        (Kind::Gauge | Kind::Sum, Some(Number::Double(v))) => {
            copy.float8(v);
            copy.null();
        }
        (Kind::Gauge | Kind::Sum, Some(Number::Int(v))) => {
            copy.float8(v as f64);
            copy.int8(v);
        }
        _ => nulls(copy, 2),
    }
    copy.bytes(m.unit.as_bytes());
    copy.bytes(&attrs);
    copy.int8(p.time as i64);
    if p.start == 0 {
        copy.null();
    } else {
        copy.int8(p.start as i64);
    }
    match m.kind {
        Kind::Gauge | Kind::Summary => copy.null(),
        Kind::Sum | Kind::Histogram | Kind::Exponential => copy.int2(data.temporality as i16),
    }
    if m.kind == Kind::Sum {
        copy.bool(data.monotonic);
    } else {
        copy.null();
    }
    copy.int4(int4_bits(p.flags));
    match m.kind {
        Kind::Gauge | Kind::Sum => nulls(copy, 15),
        Kind::Histogram => {
            copy.int8(n_count);
            opt_float8(copy, p.sum);
            opt_float8(copy, p.min);
            opt_float8(copy, p.max);
            array(
                copy,
                FLOAT8_OID,
                p.explicit_bounds.iter().map(|v| v.to_bits()),
            );
            array(copy, INT8_OID, p.bucket_counts.iter().copied());
            nulls(copy, 9);
        }
        Kind::Exponential => {
            copy.int8(n_count);
            opt_float8(copy, p.sum);
            opt_float8(copy, p.min);
            opt_float8(copy, p.max);
            nulls(copy, 2);
            copy.int4(p.scale);
            copy.int8(zero_count);
            copy.float8(p.zero_threshold);
            copy.int4(p.positive.0);
            array(copy, INT8_OID, p.positive.1.iter().copied());
            copy.int4(p.negative.0);
            array(copy, INT8_OID, p.negative.1.iter().copied());
            nulls(copy, 2);
        }
        Kind::Summary => {
            copy.int8(n_count);
            copy.float8(p.sum.unwrap_or(0.0));
            nulls(copy, 11);
            array(copy, FLOAT8_OID, p.quantiles.iter().map(|v| v.to_bits()));
            array(
                copy,
                FLOAT8_OID,
                p.quantile_values.iter().map(|v| v.to_bits()),
            );
        }
    }
    if scratch.is_empty() {
        copy.null();
    } else {
        copy.bytes(scratch);
    }
    copy.int8(m.resource_id);
    copy.int8(m.scope_id);
    Ok(())
}
