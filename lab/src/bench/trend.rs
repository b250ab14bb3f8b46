//! SVG line charts of a metric against a swept size (one line per system,
//! a dot and its value at every measured point), in the look of `chart`'s
//! bar charts: plotters' SVG backend, text as SVG `<text>`.

use plotters::prelude::*;

use super::chart::{draw_error, FONT, GRID, INK, MUTED, PALETTE};
use super::report::fmt_num;

/// One system's points, (x, y), in x order.
pub type Series = (String, Vec<(f64, f64)>);

/// What the chart says around its lines.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    /// Above the plot.
    pub title: &'a str,
    /// Below the title (e.g. which way is better).
    pub subtitle: &'a str,
    /// Under the x axis.
    pub x: &'a str,
}

const WIDTH: u32 = 760;
const HEIGHT: u32 = 480;
const HEADER: u32 = 56;

/// The chart: x from 0 to past the largest x, ticks at the x values
/// measured, y from 0; the legend in the upper left.
pub fn line_chart(labels: Labels<'_>, series: &[Series]) -> std::io::Result<String> {
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points().map(|p| p.0).fold(1.0f64, f64::max);
    let y_max = points().map(|p| p.1).fold(1e-9f64, f64::max) * 1.3;
    let mut ticks: Vec<f64> = points().map(|p| p.0).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (header, body) = root.split_vertically(HEADER);
        header
            .draw(&Text::new(
                labels.title,
                (10, 8),
                (FONT, 24).into_font().color(&INK),
            ))
            .map_err(draw_error)?;
        header
            .draw(&Text::new(
                labels.subtitle,
                (10, 32),
                (FONT, 18).into_font().color(&MUTED),
            ))
            .map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&body)
            .margin_left(10)
            .margin_right(40)
            .margin_bottom(10)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max * 1.08, 0.0..y_max)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_desc(labels.x)
            .x_labels(ticks.len().max(2) * 4)
            .x_label_formatter(&|v| {
                ticks
                    .iter()
                    .find(|t| (*t - v).abs() < 1e-9)
                    .map(|t| axis_num(*t))
                    .unwrap_or_default()
            })
            .y_labels(5)
            .y_label_formatter(&|v| axis_num(*v))
            .label_style((FONT, 16).into_font().color(&INK))
            .axis_style(GRID)
            .draw()
            .map_err(draw_error)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(std::iter::once(PathElement::new(
                    pts.clone(),
                    colour.stroke_width(3),
                )))
                .map_err(draw_error)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
            chart
                .draw_series(pts.iter().map(|&(x, y)| {
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 5, colour.filled())
                        + Text::new(fmt_num(y), (8, -18), (FONT, 15).into_font().color(&INK))
                }))
                .map_err(draw_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(GRID)
            .label_font((FONT, 16).into_font().color(&INK))
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Whole numbers without decimals (instance counts, a zero), others as in the tables.
fn axis_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{}", v as i64)
    } else {
        fmt_num(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_the_title_the_systems_and_the_values() {
        let series = vec![
            ("flat".to_string(), vec![(2.0, 10.0), (4.0, 10.5), (8.0, 11.0)]),
            ("growing".to_string(), vec![(2.0, 12.0), (4.0, 20.0), (8.0, 40.0)]),
        ];
        let labels = Labels {
            title: "8 scale-out",
            subtitle: "lower is better",
            x: "instances",
        };
        let svg = line_chart(labels, &series).unwrap();
        assert!(svg.starts_with("<svg"));
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for text in [
            "8 scale-out",
            "lower is better",
            "instances",
            "flat",
            "growing",
            "10.5",
            "40.0",
            "8",
        ] {
            assert!(texts.contains(&text), "{text} missing");
        }
        assert!(svg.contains("<polyline"), "lines drawn");
    }
}
