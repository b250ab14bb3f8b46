//! One sample of a Prometheus text page (`/metrics`), read the way the tests
//! and the bench check a counter.

use std::net::SocketAddr;
use std::time::Duration;

/// The value of the unlabelled sample `name` in a text page.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `GET http://addr/metrics` within `limit`, and the value of `name` there;
/// `None` when the page cannot be read or has no such sample.
pub async fn scrape(addr: SocketAddr, name: &str, limit: Duration) -> Option<f64> {
    let page = wsmesh_client::http::get(&format!("http://{addr}/metrics"), limit)
        .await
        .ok()?;
    sample(&page.body, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_whole_name() {
        let page = "# TYPE a_total counter\na_total_more 9\na_total 3\nb 1.5\n";
        assert_eq!(sample(page, "a_total"), Some(3.0));
        assert_eq!(sample(page, "b"), Some(1.5));
        assert_eq!(sample(page, "c"), None);
    }
}
