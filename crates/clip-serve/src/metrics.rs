//! `/metrics` in Prometheus' text format: requests by route and status, a latency histogram per
//! route, forward passes and their batch sizes per tower, queue depths. Hand-written: a dozen
//! counters under one mutex need no metrics framework, and the text format is a few lines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Upper bounds of the batch-size histogram's buckets.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (b, &le) in self.buckets.iter_mut().zip(bounds) {
            if v <= le {
                *b += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, le) in self.buckets.iter().zip(bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {b}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    batches: BTreeMap<&'static str, Histogram>,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Count a finished request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.requests.entry((route.to_owned(), status)).or_default() += 1;
        m.latency
            .entry(route.to_owned())
            .or_default()
            .observe(&LATENCY_BUCKETS, seconds);
    }

    /// Count a forward pass of `size` inputs on `tower`.
    pub fn batch(&self, tower: &'static str, size: usize) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.batches
            .entry(tower)
            .or_default()
            .observe(&BATCH_BUCKETS, size as f64);
    }

    /// The text format, with the current queue depths.
    pub fn render(&self, queues: &[(&str, usize)]) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP clip_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE clip_requests_total counter\n");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "clip_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP clip_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE clip_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            h.render(
                &mut out,
                "clip_request_duration_seconds",
                &format!("route=\"{route}\""),
                &LATENCY_BUCKETS,
            );
        }
        out.push_str("# HELP clip_batch_size Inputs per forward pass, by tower.\n");
        out.push_str("# TYPE clip_batch_size histogram\n");
        for (tower, h) in &m.batches {
            h.render(
                &mut out,
                "clip_batch_size",
                &format!("tower=\"{tower}\""),
                &BATCH_BUCKETS,
            );
        }
        out.push_str("# HELP clip_queue_requests Requests waiting for a forward pass, by tower.\n");
        out.push_str("# TYPE clip_queue_requests gauge\n");
        for (tower, n) in queues {
            let _ = writeln!(out, "clip_queue_requests{{tower=\"{tower}\"}} {n}");
        }
        out
    }
}
