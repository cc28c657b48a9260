//! What `/metrics` serves, in the Prometheus text format
//! (docs/metrics.md): the counts are kept where the facts are (the engine's
//! [`crate::engine::EngineStats`], the store journal's commits, the plugins'
//! statuses, the daemon's connections) as plain numbers; this module only
//! names and renders them, with `prometheus-client`'s encoder, when a scrape
//! asks. Nothing is counted here, so an unscraped host pays nothing for it.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Upper bounds (seconds) of the time histograms: from half a millisecond
/// (a WASM echo) to five minutes (the default task timeout).
pub const SECONDS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0];

/// Upper bounds of the store's batch sizes (records per commit).
pub const RECORDS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 4096.0];

/// A histogram as plain numbers: observations per bucket of `bounds` (and
/// one more above the last), their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(upper bound, observations in that bucket)`, the last bound +Inf.
    fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds.iter().copied().chain([f64::MAX]).zip(self.counts.iter().copied()).collect()
    }
}

/// A scrape in progress: families are written in the order they are begun.
pub struct Scrape<'e> {
    encoder: DescriptorEncoder<'e>,
}

impl<'e> Scrape<'e> {
    pub fn new(encoder: DescriptorEncoder<'e>) -> Self {
        Self { encoder }
    }

    fn family<'s>(
        &'s mut self,
        name: &'s str,
        help: &str,
        kind: MetricType,
    ) -> Result<prometheus_client::encoding::MetricEncoder<'s>, std::fmt::Error> {
        self.encoder.encode_descriptor(name, help, None, kind)
    }

    /// A counter family (`name` without `_total`, which the encoder adds):
    /// one series per `(labels, value)`.
    pub fn counters<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'static str, &'l str)>, u64)>,
    ) -> Result<(), std::fmt::Error> {
        self.values(
            name,
            help,
            MetricType::Counter,
            series.into_iter().map(|(labels, n)| (labels, ConstCounter::new(n))),
        )
    }

    /// A gauge family: one series per `(labels, value)`.
    pub fn gauges<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'static str, &'l str)>, i64)>,
    ) -> Result<(), std::fmt::Error> {
        self.values(name, help, MetricType::Gauge, series.into_iter().map(|(labels, n)| (labels, ConstGauge::new(n))))
    }

    fn values<'l, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        series: impl IntoIterator<Item = (Vec<(&'static str, &'l str)>, M)>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = self.family(name, help, kind)?;
        for (labels, metric) in series {
            if labels.is_empty() {
                // A family's one series without labels is written bare.
                return metric.encode(family);
            }
            let labels = safe(&labels);
            metric.encode(family.encode_family(&labels.as_slice())?)?;
        }
        Ok(())
    }

    /// A histogram family: one series per `(labels, histogram)`.
    pub fn histograms<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'static str, &'l str)>, &'l Histogram)>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = self.family(name, help, MetricType::Histogram)?;
        for (labels, histogram) in series {
            let (sum, count, buckets) = (histogram.sum(), histogram.count(), histogram.buckets());
            if labels.is_empty() {
                return family.encode_histogram::<NoLabelSet>(sum, count, &buckets, None);
            }
            let labels = safe(&labels);
            let labels = labels.as_slice();
            family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// Label values as the text format may carry them: the encoder writes them
/// unescaped, so a quote, backslash or line break becomes `_` (protocol,
/// method and plugin names never hold one; this is the guard).
fn safe<'l>(labels: &[(&'static str, &'l str)]) -> Vec<(&'static str, std::borrow::Cow<'l, str>)> {
    let bad = |c: char| matches!(c, '"' | '\\' | '\n' | '\r');
    labels
        .iter()
        .map(|(name, value)| {
            let value = match value.contains(bad) {
                true => std::borrow::Cow::Owned(value.replace(bad, "_")),
                false => std::borrow::Cow::Borrowed(*value),
            };
            (*name, value)
        })
        .collect()
}

/// Render what `collect` writes as Prometheus text (with the `# EOF` the
/// OpenMetrics encoder ends with).
pub fn render(collect: impl Fn(&mut Scrape<'_>) -> Result<(), std::fmt::Error> + Send + Sync + 'static) -> String {
    struct Collect<F>(F);
    impl<F> std::fmt::Debug for Collect<F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("scrape")
        }
    }
    impl<F: Fn(&mut Scrape<'_>) -> Result<(), std::fmt::Error> + Send + Sync + 'static>
        prometheus_client::collector::Collector for Collect<F>
    {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            (self.0)(&mut Scrape::new(encoder))
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Collect(collect)));
    let mut text = String::new();
    // Writing to a String cannot fail, and every name above is valid.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_into_their_buckets_and_render() {
        let mut h = Histogram::new(&SECONDS);
        for v in [0.0001, 0.0005, 0.003, 400.0] {
            h.observe(v);
        }
        assert_eq!(
            (h.count(), h.buckets()[0], h.buckets()[3], *h.buckets().last().unwrap()),
            (4, (0.0005, 2), (0.005, 1), (f64::MAX, 1))
        );
        let text = render(move |scrape| {
            scrape.counters("demo_things", "Things.", [(vec![("kind", "a\"b")], 3)])?;
            scrape.gauges("demo_level", "A level.", [(vec![], -2)])?;
            scrape.histograms("demo_seconds", "Times.", [(vec![("m", "x")], &h)])?;
            scrape.histograms("demo_bare_seconds", "Times.", [(vec![], &h)])
        });
        assert!(text.contains("\ndemo_bare_seconds_count 4\n"), "{text}");
        assert!(text.contains("# TYPE demo_things counter\ndemo_things_total{kind=\"a_b\"} 3\n"), "{text}");
        assert!(text.contains("\ndemo_level -2\n"), "{text}");
        assert!(text.contains("demo_seconds_bucket{le=\"0.0005\",m=\"x\"} 2\n"), "{text}");
        assert!(text.contains("demo_seconds_bucket{le=\"+Inf\",m=\"x\"} 4\n"), "{text}");
        assert!(text.contains("demo_seconds_count{m=\"x\"} 4\n"), "{text}");
    }
}
