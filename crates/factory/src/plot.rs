//! The loss curves (training loss per logged step, validation loss per evaluation) drawn from
//! `log.jsonl` as `loss.svg` (with axis labels and a legend) and `loss.png` (the same chart; its text
//! is left out because plotters is built without system fonts: train is blue, validation red).

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
    b.margin(16)
        .x_label_area_size(if text { 40 } else { 8 })
        .y_label_area_size(if text { 56 } else { 8 });
    if text {
        b.caption("loss", ("sans-serif", 18));
    }
    let mut chart = b.build_cartesian_2d(0.0..x_max, (y_min - pad).max(0.0)..y_max + pad)?;
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
