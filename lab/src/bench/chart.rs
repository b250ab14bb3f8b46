//! SVG bar charts of a report's medians (one chart per metric, min–max as a
//! whisker), drawn with `plotters`' SVG backend: the text is SVG `<text>`, so
//! no font files are needed to draw and any viewer or code host renders it.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::report::{fmt_num, Metric};

/// Colours per system, in order of appearance.
pub(crate) const PALETTE: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
];
pub(crate) const INK: RGBColor = RGBColor(0x20, 0x20, 0x20);
pub(crate) const MUTED: RGBColor = RGBColor(0x66, 0x66, 0x66);
pub(crate) const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
pub(crate) const FONT: &str = "sans-serif";
const WIDTH: u32 = 760;
/// Title and subtitle above the plot.
const HEADER: u32 = 56;
/// One system's band: a bar 30 px high with 14 px between bars.
const ROW: u32 = 44;

/// A drawing failure, as the I/O error the report writer deals in.
pub(crate) fn draw_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// One horizontal bar per system, top to bottom in the order the systems ran:
/// the median, a whisker from min to max, the median written at the bar's end.
pub fn bar_chart(metric: &Metric) -> std::io::Result<String> {
    let rows: Vec<(String, f64, f64, f64)> = metric
        .samples
        .iter()
        .filter_map(|(s, _)| metric.of(s).map(|m| (s.clone(), m.median, m.min, m.max)))
        .collect();
    let n = rows.len() as u32;
    let height = HEADER + n.max(1) * ROW + 36;
    let max = rows.iter().map(|r| r.3.max(r.1)).fold(0.0f64, f64::max).max(1e-9);
    let better = if metric.higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (header, body) = root.split_vertically(HEADER);
        let title = format!("{}: {}", metric.scenario, metric.name);
        header
            .draw(&Text::new(title, (10, 8), (FONT, 24).into_font().color(&INK)))
            .map_err(draw_error)?;
        header
            .draw(&Text::new(better, (10, 32), (FONT, 18).into_font().color(&MUTED)))
            .map_err(draw_error)?;

        let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        // Segment `last - i` holds row i, so the first system is at the top
        // (the segments of `0..last` are 0 to `last`, both included).
        let last = (n as i32 - 1).max(0);
        let band = |i: usize| last - i as i32;
        let mut chart = ChartBuilder::on(&body)
            .margin_left(10)
            .margin_right(110)
            .x_label_area_size(26)
            .y_label_area_size(140)
            .build_cartesian_2d(0.0..max, (0..last).into_segmented())
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(5)
            .x_label_formatter(&|v| fmt_num(*v))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(b) => names.get((last - b) as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style((FONT, 18).into_font().color(&INK))
            .axis_style(GRID)
            .draw()
            .map_err(draw_error)?;
        for (i, (_, median, min, max_v)) in rows.iter().enumerate() {
            let b = band(i);
            let colour = PALETTE[i % PALETTE.len()];
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(b)),
                    (*median, SegmentValue::Exact(b + 1)),
                ],
                colour.filled(),
            );
            bar.set_margin(7, 7, 0, 0);
            let mid = || SegmentValue::CenterOf(b);
            let whisker = PathElement::new(vec![(*min, mid()), (*max_v, mid())], INK.stroke_width(3));
            let cap = |x: f64| {
                EmptyElement::at((x, mid())) + PathElement::new(vec![(0, -9), (0, 9)], INK.stroke_width(2))
            };
            let label = EmptyElement::at((max_v.max(*median), mid()))
                + Text::new(fmt_num(*median), (8, -8), (FONT, 18).into_font().color(&INK));
            chart.draw_series(std::iter::once(bar)).map_err(draw_error)?;
            chart.draw_series(std::iter::once(whisker)).map_err(draw_error)?;
            chart.draw_series([cap(*min), cap(*max_v)]).map_err(draw_error)?;
            chart.draw_series(std::iter::once(label)).map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Writes one SVG per metric into `dir` (removing the charts of an earlier
/// run first, PNGs of older versions included); returns the file names.
pub fn write_all(metrics: &[Metric], dir: &Path) -> std::io::Result<Vec<String>> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "svg" || e == "png") {
            std::fs::remove_file(entry.path())?;
        }
    }
    let mut names = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let slug: String = format!("{}-{}", m.scenario, m.name)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let name = format!("{i:02}-{}.svg", slug.trim_matches('-'));
        std::fs::write(dir.join(&name), bar_chart(m)?)?;
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric() -> Metric {
        let mut m = Metric::new("1 test", "req/s", true, "lb");
        for v in [10.0, 12.0, 11.0] {
            m.push("lb", v);
        }
        m.push("haproxy", 5.0);
        m
    }

    #[test]
    fn svg_has_the_title_the_systems_and_the_medians() {
        let svg = bar_chart(&metric()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for text in [
            "1 test: req/s",
            "higher is better",
            "lb",
            "haproxy",
            "11.0",
            "5.00",
        ] {
            assert!(texts.contains(&text), "{text} missing");
        }
        assert!(!svg.contains("<image"), "no embedded bitmaps");
    }

    #[test]
    fn write_all_replaces_earlier_charts_and_names_them_svg() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-old.png"), b"x").unwrap();
        let names = write_all(&[metric()], dir.path()).unwrap();
        assert_eq!(names, ["00-1-test-req-s.svg"]);
        assert!(!dir.path().join("00-old.png").exists());
        assert!(dir.path().join(&names[0]).exists());
    }
}
