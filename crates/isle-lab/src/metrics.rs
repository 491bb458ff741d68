//! Reading the Prometheus/OpenMetrics text a node serves at `/metrics`.

/// The samples of metric `name` (any labels) in `text`: (labels, value), in order. A line
/// is `name{labels} value` or `name value`; comments and other metrics are skipped.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(move |line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((metric, labels)) => (metric, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            Some((labels, value.parse::<f64>().ok()?))
        })
}

/// The sum of every sample of `name` (0 when there is none).
pub fn sum(text: &str, name: &str) -> f64 {
    samples(text, name).map(|(_, value)| value).sum()
}

/// The first sample of `name`, if any.
pub fn first(text: &str, name: &str) -> Option<f64> {
    samples(text, name).next().map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP isle_x help\n# TYPE isle_x counter\nisle_x_total{peer=\"1\"} 2\n\
                        isle_x_total{peer=\"2\"} 3.5\nisle_xy_total 9\nisle_up 1\n";

    #[test]
    fn sums_every_labelled_sample_of_exactly_that_name() {
        assert_eq!(sum(TEXT, "isle_x_total"), 5.5);
        assert_eq!(sum(TEXT, "isle_xy_total"), 9.0);
        assert_eq!(sum(TEXT, "isle_missing"), 0.0);
    }

    #[test]
    fn first_reads_unlabelled_and_labelled_samples() {
        assert_eq!(first(TEXT, "isle_up"), Some(1.0));
        assert_eq!(first(TEXT, "isle_x_total"), Some(2.0));
        let labels: Vec<&str> = samples(TEXT, "isle_x_total").map(|(l, _)| l).collect();
        assert_eq!(labels, ["peer=\"1\"", "peer=\"2\""]);
        assert_eq!(first(TEXT, "isle_missing"), None);
    }
}
