//! Reading the Prometheus text format that `/metrics` serves: a sample's value by its name and
//! labels, for tests that assert on counters and for benchmarks that report them.

/// The value of the sample `name` whose labels are exactly `labels` (none: the unlabelled
/// sample), from a `/metrics` text. Label order does not matter.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (found, value) = match rest.strip_prefix('{') {
                Some(rest) => {
                    let (set, value) = rest.split_once('}')?;
                    (parse_labels(set)?, value)
                }
                None if rest.starts_with(' ') => (Vec::new(), rest),
                None => return None,
            };
            let same = found.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v));
            if !same {
                return None;
            }
            value.split_whitespace().next()?.parse().ok()
        })
}

/// The value of the unlabelled sample `name`.
pub fn value(text: &str, name: &str) -> Option<f64> {
    sample(text, name, &[])
}

/// `a="x",b="y"` as pairs; `None` when it is not of that form.
fn parse_labels(set: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = set.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(chars.next()?.1),
                (_, c) => value.push(c),
            }
        };
        pairs.push((key.trim().to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP keepalive_redis_up Whether Redis answers.\n\
        # TYPE keepalive_redis_up gauge\n\
        keepalive_redis_up 1\n\
        keepalive_redis_outages_total 2\n\
        keepalive_redis_outages_total_extra 9\n\
        keepalive_http_requests_total{method=\"GET\",route=\"/livez\",status=\"200\"} 12\n\
        keepalive_http_requests_total{method=\"GET\",route=\"/a\\\"b\",status=\"404\"} 3\n";

    #[test]
    fn finds_unlabelled_samples_by_their_whole_name() {
        assert_eq!(value(TEXT, "keepalive_redis_up"), Some(1.0));
        assert_eq!(value(TEXT, "keepalive_redis_outages_total"), Some(2.0));
        assert_eq!(value(TEXT, "keepalive_missing"), None);
        assert_eq!(value(TEXT, "keepalive_http_requests_total"), None);
    }

    #[test]
    fn finds_labelled_samples_in_any_label_order() {
        let labels = [("status", "200"), ("method", "GET"), ("route", "/livez")];
        assert_eq!(
            sample(TEXT, "keepalive_http_requests_total", &labels),
            Some(12.0)
        );
        let escaped = [("method", "GET"), ("route", "/a\"b"), ("status", "404")];
        assert_eq!(
            sample(TEXT, "keepalive_http_requests_total", &escaped),
            Some(3.0)
        );
        assert_eq!(
            sample(TEXT, "keepalive_http_requests_total", &labels[..2]),
            None,
            "every label counts"
        );
    }
}
