//! The loss curves (training loss per logged step, validation loss per evaluation) drawn from
//! `log.jsonl` as `loss.svg` and `loss.png`. Plotters is built without font support (no system
//! fonts needed), so the SVG carries its text as SVG text and the PNG's labels are drawn with a
//! small built-in 5×7 pixel font.

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Points read from a job's log.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Curves {
    pub train: Vec<(f64, f64)>,
    pub val: Vec<(f64, f64)>,
}

impl Curves {
    /// Reads `log.jsonl` (lines with `loss` are training points, lines with `val_loss` validation).
    pub fn from_log(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut c = Self::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(step) = v["step"].as_f64() else {
                continue;
            };
            if let Some(l) = v["loss"].as_f64().filter(|l| l.is_finite()) {
                c.train.push((step, l));
            }
            if let Some(l) = v["val_loss"].as_f64().filter(|l| l.is_finite()) {
                c.val.push((step, l));
            }
        }
        Ok(c)
    }
}

/// Writes the chart as PNG and SVG.
pub fn draw(curves: &Curves, png: &Path, svg: &Path) -> Result<()> {
    let err = |p: &Path, e: String| Error::data(p, format!("drawing the loss chart: {e}"));
    {
        let root = BitMapBackend::new(png, (800, 480)).into_drawing_area();
        chart(&root, curves, false).map_err(|e| err(png, e.to_string()))?;
        root.present().map_err(|e| err(png, e.to_string()))?;
    }
    let root = SVGBackend::new(svg, (800, 480)).into_drawing_area();
    chart(&root, curves, true).map_err(|e| err(svg, e.to_string()))?;
    root.present().map_err(|e| err(svg, e.to_string()))?;
    Ok(())
}

fn chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &Curves,
    text: bool,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let all = c.train.iter().chain(&c.val);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let (mut y_min, mut y_max) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let ink = if text { BLACK.to_rgba() } else { TRANSPARENT };
    let font = ("sans-serif", 14).into_font().color(&ink);
    let mut b = ChartBuilder::on(root);
    b.margin(16).x_label_area_size(40).y_label_area_size(64);
    if text {
        b.caption("loss", ("sans-serif", 18));
    }
    let (y_lo, y_hi) = ((y_min - pad).max(0.0), y_max + pad);
    let mut chart = b.build_cartesian_2d(0.0..x_max, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss per token")
        .label_style(font.clone())
        .axis_desc_style(font)
        .draw()?;
    let train_color = RGBColor(31, 119, 180);
    let val_color = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            c.train.iter().copied(),
            train_color.stroke_width(2),
        ))?
        .label("train")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], train_color.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            c.val.iter().copied(),
            val_color.stroke_width(2),
        ))?
        .label("validation")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], val_color.stroke_width(2)));
    chart.draw_series(c.val.iter().map(|&p| Circle::new(p, 4, val_color.filled())))?;
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        return Ok(());
    }
    // Pixel-font labels: five ticks on each axis, axis names and a legend.
    let put = |x: i32,
               y: i32,
               s: &str,
               color: RGBColor,
               right: bool|
     -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let x = if right { x - pixel_text_width(s) } else { x };
        draw_pixel_text(root, x, y, s, color)
    };
    for i in 0..=4 {
        let yv = y_lo + (y_hi - y_lo) * i as f64 / 4.0;
        let (px, py) = chart.backend_coord(&(0.0, yv));
        put(px - 8, (py - 7).max(2), &format!("{yv:.2}"), BLACK, true)?;
        let xv = x_max * i as f64 / 4.0;
        let (px, py) = chart.backend_coord(&(xv, y_lo));
        let label = format!("{}", xv.round() as i64);
        put(
            px - pixel_text_width(&label) / 2,
            py + 8,
            &label,
            BLACK,
            false,
        )?;
    }
    let (right, top) = chart.backend_coord(&(x_max, y_hi));
    let (left, bottom) = chart.backend_coord(&(0.0, y_lo));
    put((left + right) / 2, bottom + 26, "step", BLACK, false)?;
    put(left + 8, top + 6, "loss", BLACK, false)?;
    put(right - 8, top + 6, "train", train_color, true)?;
    put(right - 8, top + 24, "validation", val_color, true)?;
    Ok(())
}

/// 5×7 glyphs, one byte per row (low 5 bits, left to right), for the characters the labels use.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        'a' => [0, 0, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'i' => [0x04, 0, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'n' => [0, 0, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0, 0, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0, 0, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'r' => [0, 0, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0, 0, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'v' => [0, 0, 0x11, 0x11, 0x11, 0x0A, 0x04],
        _ => [0; 7],
    }
}

/// Pixels per font dot.
const DOT: i32 = 2;

fn pixel_text_width(s: &str) -> i32 {
    s.chars().count() as i32 * 6 * DOT
}

/// Draws `s` with its top-left corner at `(x, y)`.
fn draw_pixel_text<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    x: i32,
    y: i32,
    s: &str,
    color: RGBColor,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, c) in s.chars().enumerate() {
        let gx = x + i as i32 * 6 * DOT;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    let (px, py) = (gx + col * DOT, y + row as i32 * DOT);
                    root.draw(&Rectangle::new(
                        [(px, py), (px + DOT - 1, py + DOT - 1)],
                        color.filled(),
                    ))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_written_without_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.jsonl");
        std::fs::write(
            &log,
            "{\"step\":1,\"loss\":3.0}\n{\"step\":2,\"loss\":2.5}\n{\"step\":2,\"val_loss\":2.7,\"val_ppl\":14.9}\nnot json\n",
        )
        .unwrap();
        let c = Curves::from_log(&log).unwrap();
        assert_eq!(c.train, vec![(1.0, 3.0), (2.0, 2.5)]);
        assert_eq!(c.val, vec![(2.0, 2.7)]);
        let (png, svg) = (dir.path().join("loss.png"), dir.path().join("loss.svg"));
        draw(&c, &png, &svg).unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(svg.contains("<svg") && svg.contains("validation"));
    }
}
