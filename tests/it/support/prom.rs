//! Reading a Prometheus text page by metric name and label set, whatever order the labels are
//! printed in: a page as text, a gateway's page, or a `Metrics` registry's.

use super::gateway::GatewayHandle;
use std::collections::BTreeMap;
use tollgate::observe::Metrics;

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a page (comment lines skipped).
pub fn samples(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                    (name.to_string(), parse_labels(inner, line))
                }
            };
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// `a="x",b="y"` (values may contain escaped quotes, commas and braces).
fn parse_labels(inner: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated label value in {line:?}"));
        labels.insert(name.trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The value of the sample with exactly this name and label set.
pub fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(page)
        .into_iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// Sum of every sample of `name` whose labels include all of `labels`.
pub fn sum(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(page)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// The value of `name{labels}` (labels in any order); 0 when the sample is absent.
pub async fn metric(gw: &GatewayHandle, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&gw.metrics().await, name, labels).unwrap_or(0.0)
}

/// The sum of every sample of `name` carrying at least `labels`.
pub async fn metric_sum(gw: &GatewayHandle, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(&gw.metrics().await, name, labels)
}

/// The value of `name{labels}` in a metrics registry (a limiter's or a verifier's, with no
/// gateway around it); 0 when the sample is absent.
pub fn registry_value(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    let page = String::from_utf8(metrics.render()).expect("metrics page is UTF-8");
    value(&page, name, labels).unwrap_or(0.0)
}
