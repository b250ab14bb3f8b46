//! PNG bar charts of a report's medians (one chart per metric, min–max as a
//! whisker), drawn pixel by pixel with the project's own bitmap font and
//! encoded with `flate2`: no plotting library, no system fonts.

use std::io::Write;
use std::path::Path;

use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};

use super::font::glyph;
use super::report::{fmt_num, Metric};

/// An RGB image.
pub struct Canvas {
    /// Width in pixels.
    width: usize,
    /// Height in pixels.
    height: usize,
    /// Row-major RGB.
    pixels: Vec<[u8; 3]>,
}

/// Colours per system, in order of appearance.
const PALETTE: [[u8; 3]; 5] = [
    [0x1f, 0x77, 0xb4],
    [0xd6, 0x27, 0x28],
    [0x2c, 0xa0, 0x2c],
    [0xff, 0x7f, 0x0e],
    [0x94, 0x67, 0xbd],
];
const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [0x20, 0x20, 0x20];
const GRID: [u8; 3] = [0xdd, 0xdd, 0xdd];

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![WHITE; width * height],
        }
    }

    /// Fills a rectangle, clipped to the canvas.
    pub fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.pixels[yy * self.width + xx] = c;
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel `scale` wide.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            let gx = x + i * 6 * scale;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.rect(gx + col * scale, y + row * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    /// Encodes as PNG (8-bit RGB).
    pub fn png(&self) -> std::io::Result<Vec<u8>> {
        let mut raw = Vec::with_capacity(self.height * (1 + self.width * 3));
        for row in self.pixels.chunks(self.width) {
            raw.push(0);
            for p in row {
                raw.extend_from_slice(p);
            }
        }
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&raw)?;
        let idat = z.finish()?;
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(self.width as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.height as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let mut crc = Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(&crc.sum().to_be_bytes());
        }
        Ok(out)
    }
}

/// One horizontal bar per system: the median, a whisker from min to max,
/// the value written at the bar's end.
pub fn bar_chart(metric: &Metric) -> Canvas {
    let rows: Vec<(String, f64, f64, f64)> = metric
        .samples
        .iter()
        .filter_map(|(s, _)| metric.of(s).map(|m| (s.clone(), m.median, m.min, m.max)))
        .collect();
    let (left, right, top, bar_h, gap) = (150usize, 110usize, 56usize, 30usize, 14usize);
    let width = 760usize;
    let height = top + rows.len() * (bar_h + gap) + 20;
    let mut c = Canvas::new(width, height);
    let better = if metric.higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    };
    c.text(10, 10, &format!("{}: {}", metric.scenario, metric.name), 2, INK);
    c.text(10, 32, better, 2, [0x66, 0x66, 0x66]);
    let max = rows.iter().map(|r| r.3.max(r.1)).fold(0.0f64, f64::max).max(1e-9);
    let span = (width - left - right) as f64;
    for t in 0..=4 {
        let x = left + (span * t as f64 / 4.0) as usize;
        c.rect(x, top - 4, 1, height - top - 12, GRID);
    }
    for (i, (name, median, min, max_v)) in rows.iter().enumerate() {
        let y = top + i * (bar_h + gap);
        let colour = PALETTE[i % PALETTE.len()];
        c.text(10, y + 8, name, 2, INK);
        let w = (span * median / max) as usize;
        c.rect(left, y, w.max(1), bar_h, colour);
        let (x0, x1) = (
            left + (span * min / max) as usize,
            left + (span * max_v / max) as usize,
        );
        c.rect(x0, y + bar_h / 2 - 1, x1.saturating_sub(x0).max(1), 3, INK);
        c.rect(x0, y + 6, 2, bar_h - 12, INK);
        c.rect(x1, y + 6, 2, bar_h - 12, INK);
        c.text(x1.max(left + w) + 8, y + 8, &fmt_num(*median), 2, INK);
    }
    c
}

/// Writes one PNG per metric into `dir` (removing the PNGs of an earlier
/// run first); returns the file names.
pub fn write_all(metrics: &[Metric], dir: &Path) -> std::io::Result<Vec<String>> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "png") {
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
        let name = format!("{i:02}-{}.png", slug.trim_matches('-'));
        std::fs::write(dir.join(&name), bar_chart(m).png()?)?;
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_signature_header_and_end() {
        let mut m = Metric::new("1 test", "req/s", true, "lb");
        m.push("lb", 10.0);
        m.push("haproxy", 5.0);
        let png = bar_chart(&m).png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }
}
