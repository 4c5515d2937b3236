//! The plots people look at, as PNG and SVG: the per-day time series of a run (or of each
//! sweep point over its seeds: the median line inside a min–max band), and the phase diagram of
//! the take-off probability over two swept parameters. The SVG text is real SVG text (the HTML
//! report inlines it); the PNG labels use a small pixel font ([`crate::pixfont`]).

use crate::{pixfont, report::DayRow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use std::path::Path;

/// A plotted daily series: its title and how it is read from a day's row.
pub struct Metric {
    pub title: &'static str,
    pub get: fn(&DayRow) -> f64,
}

/// The series in the time-series plot, in panel order.
pub const METRICS: [Metric; 6] = [
    Metric {
        title: "approved contributions per day",
        get: |r| r.approved as f64,
    },
    Metric {
        title: "inferences per day",
        get: |r| r.inferences as f64,
    },
    Metric {
        title: "contributor income, OPEN per day",
        get: |r| r.contributor_income_open,
    },
    Metric {
        title: "treasury, OPEN",
        get: |r| r.treasury_open,
    },
    Metric {
        title: "subsidy fund left, OPEN",
        get: |r| r.subsidy_left_open,
    },
    Metric {
        title: "total staked, OPEN",
        get: |r| r.total_staked_open,
    },
];

/// The daily series of one run, or of one sweep point across its seeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bands {
    /// The legend entry (`seed 1`, `subsidy.initial_open = 5000`).
    pub label: String,
    pub seeds: u32,
    /// Per metric ([`METRICS`] order), per day: (min, median, max) over the seeds.
    pub metrics: Vec<Vec<(f64, f64, f64)>>,
}

impl Bands {
    /// The bands of several runs of the same length (one run gives a band of zero width).
    pub fn from_runs(label: String, runs: &[&[DayRow]]) -> Bands {
        let days = runs.iter().map(|r| r.len()).min().unwrap_or(0);
        let metrics = METRICS
            .iter()
            .map(|m| {
                (0..days)
                    .map(|d| {
                        let mut v: Vec<f64> = runs.iter().map(|r| (m.get)(&r[d])).collect();
                        v.sort_by(f64::total_cmp);
                        let n = v.len();
                        let mid = if n % 2 == 1 {
                            v[n / 2]
                        } else {
                            (v[n / 2 - 1] + v[n / 2]) / 2.0
                        };
                        (v[0], mid, v[n - 1])
                    })
                    .collect()
            })
            .collect();
        Bands {
            label,
            seeds: runs.len() as u32,
            metrics,
        }
    }
}

/// Take-off shares over a grid of two parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Phase {
    pub x_param: String,
    pub y_param: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// `cells[j][i]`: (take-offs, runs) at `xs[i]`, `ys[j]`.
    pub cells: Vec<Vec<(u32, u32)>>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Writes `<stem>.png` and `<stem>.svg` into `dir` and returns the SVG text.
fn write_both(
    dir: &Path,
    stem: &str,
    size: (u32, u32),
    draw_png: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
    draw_svg: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let png = dir.join(format!("{stem}.png"));
    let err = |e: String| format!("drawing {}: {e}", png.display());
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw_png(&root).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_svg(&root).map_err(|e| format!("drawing {stem}.svg: {e}"))?;
        root.present()
            .map_err(|e| format!("drawing {stem}.svg: {e}"))?;
    }
    let path = dir.join(format!("{stem}.svg"));
    std::fs::write(&path, &svg).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(svg)
}

/// Text at `(x, y)` on the top-level area: SVG text when `text`, pixel glyphs otherwise.
/// `h`/`v` place the point: left/centre/right, top/centre/bottom of the text.
#[allow(clippy::too_many_arguments)]
fn label<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: bool,
    x: i32,
    y: i32,
    s: &str,
    color: RGBColor,
    h: HPos,
    v: VPos,
) -> DrawResult<DB> {
    if text {
        let style = ("sans-serif", 13)
            .into_font()
            .color(&color)
            .pos(Pos::new(h, v));
        return root.draw(&Text::new(s.to_string(), (x, y), style));
    }
    let w = pixfont::width(s);
    let hgt = 7 * pixfont::DOT;
    let x = match h {
        HPos::Left => x,
        HPos::Center => x - w / 2,
        HPos::Right => x - w,
    };
    let y = match v {
        VPos::Top => y,
        VPos::Center => y - hgt / 2,
        VPos::Bottom => y - hgt,
    };
    pixfont::draw(root, x, y, s, color)
}

/// A number in a few characters: 950, 12.5, 3.2K, 1.5M, 0.003.
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "K")
    } else {
        (v, "")
    };
    let digits = if x.abs() >= 100.0 || x == x.trunc() {
        0
    } else if x.abs() >= 1.0 {
        1
    } else {
        3
    };
    format!("{x:.digits$}{suffix}")
}

/// Writes `timeseries.png` and `timeseries.svg` (six panels, one band per entry of `bands`) and
/// returns the SVG text.
pub fn timeseries(dir: &Path, bands: &[Bands]) -> Result<String, String> {
    write_both(
        dir,
        "timeseries",
        (1200, 960),
        |r| draw_timeseries(r, bands, false).map_err(|e| e.to_string()),
        |r| draw_timeseries(r, bands, true).map_err(|e| e.to_string()),
    )
}

fn draw_timeseries<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    bands: &[Bands],
    text: bool,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let seeds = bands.iter().map(|b| b.seeds).max().unwrap_or(1);
    let head = if seeds > 1 {
        label(
            root,
            text,
            20,
            8,
            &format!("median over up to {seeds} seeds, min-max band"),
            BLACK,
            HPos::Left,
            VPos::Top,
        )?;
        18
    } else {
        0
    };
    let widest = bands
        .iter()
        .map(|b| pixfont::width(&b.label))
        .max()
        .unwrap_or(0);
    let cols = ((w as i32 - 40) / (widest + 48)).clamp(1, 3) as usize;
    let legend_h = 16 + head + 18 * bands.len().div_ceil(cols) as i32;
    for (i, b) in bands.iter().enumerate() {
        let (col, row) = ((i % cols) as i32, (i / cols) as i32);
        let x = 20 + col * (w as i32 - 40) / cols as i32;
        let y = 8 + head + row * 18;
        let color = PALETTE[i % PALETTE.len()];
        root.draw(&Rectangle::new(
            [(x, y + 3), (x + 16, y + 11)],
            color.filled(),
        ))?;
        label(
            root,
            text,
            x + 22,
            y,
            &b.label,
            BLACK,
            HPos::Left,
            VPos::Top,
        )?;
    }
    let body = root.margin(legend_h as u32, 0, 0, 0);
    let panels = body.split_evenly((3, 2));
    for (m, area) in panels.iter().enumerate() {
        panel(root, area, bands, m, text)?;
    }
    Ok(())
}

fn panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    bands: &[Bands],
    m: usize,
    text: bool,
) -> DrawResult<DB> {
    let days = bands.iter().map(|b| b.metrics[m].len()).max().unwrap_or(0);
    let x_max = (days.max(2) - 1) as f64;
    let y_top = bands
        .iter()
        .flat_map(|b| b.metrics[m].iter().map(|p| p.2))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let y_max = if y_top > 0.0 { y_top * 1.05 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin_top(26)
        .margin_left(8)
        .margin_right(16)
        .margin_bottom(8)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_labels(5)
        .y_labels(5)
        .light_line_style(RGBColor(235, 235, 235))
        .label_style(("sans-serif", 12).into_font().color(&TRANSPARENT))
        .draw()?;
    for (i, b) in bands.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let series = &b.metrics[m];
        if b.seeds > 1 {
            let pts: Vec<(f64, f64)> = series
                .iter()
                .enumerate()
                .map(|(d, p)| (d as f64, p.2))
                .chain(
                    series
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(d, p)| (d as f64, p.0)),
                )
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(pts, color.mix(0.18).filled())))?;
        }
        chart.draw_series(LineSeries::new(
            series.iter().enumerate().map(|(d, p)| (d as f64, p.1)),
            color.stroke_width(2),
        ))?;
    }
    let (left, top) = chart.backend_coord(&(0.0, y_max));
    let (right, bottom) = chart.backend_coord(&(x_max, 0.0));
    label(
        root,
        text,
        left,
        top - 20,
        METRICS[m].title,
        BLACK,
        HPos::Left,
        VPos::Top,
    )?;
    for k in 0..=4 {
        let yv = y_max * k as f64 / 4.0;
        let (_, py) = chart.backend_coord(&(0.0, yv));
        label(
            root,
            text,
            left - 6,
            py,
            &compact(yv),
            BLACK,
            HPos::Right,
            VPos::Center,
        )?;
        let xv = (x_max * k as f64 / 4.0).round();
        let (px, _) = chart.backend_coord(&(xv, 0.0));
        label(
            root,
            text,
            px,
            bottom + 6,
            &format!("{xv}"),
            BLACK,
            HPos::Center,
            VPos::Top,
        )?;
    }
    if m == 0 {
        label(
            root,
            text,
            right,
            bottom + 22,
            "day",
            BLACK,
            HPos::Right,
            VPos::Top,
        )?;
    }
    Ok(())
}

/// The colour of a take-off share: red (0) through yellow (0.5) to green (1).
fn share_color(s: f64) -> RGBColor {
    let lerp = |a: (f64, f64, f64), b: (f64, f64, f64), t: f64| {
        RGBColor(
            (a.0 + (b.0 - a.0) * t) as u8,
            (a.1 + (b.1 - a.1) * t) as u8,
            (a.2 + (b.2 - a.2) * t) as u8,
        )
    };
    let (red, yellow, green) = (
        (215.0, 48.0, 39.0),
        (255.0, 255.0, 191.0),
        (26.0, 152.0, 80.0),
    );
    let s = s.clamp(0.0, 1.0);
    if s < 0.5 {
        lerp(red, yellow, s * 2.0)
    } else {
        lerp(yellow, green, s * 2.0 - 1.0)
    }
}

/// Writes `phase.png` and `phase.svg` (one cell per grid point, coloured by its take-off share
/// and labelled with take-offs/runs) and returns the SVG text.
pub fn phase(dir: &Path, p: &Phase) -> Result<String, String> {
    if p.xs.is_empty() || p.ys.is_empty() {
        return Err("a phase diagram needs at least one value of each parameter".into());
    }
    write_both(
        dir,
        "phase",
        (900, 700),
        |r| draw_phase(r, p, false).map_err(|e| e.to_string()),
        |r| draw_phase(r, p, true).map_err(|e| e.to_string()),
    )
}

fn draw_phase<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &Phase,
    text: bool,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (nx, ny) = (p.xs.len(), p.ys.len());
    let mut chart = ChartBuilder::on(root)
        .margin_top(56)
        .margin_left(16)
        .margin_right(24)
        .margin_bottom(16)
        .x_label_area_size(56)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..nx as f64, 0.0..ny as f64)?;
    chart.draw_series(p.cells.iter().enumerate().flat_map(|(j, row)| {
        row.iter().enumerate().map(move |(i, &(k, n))| {
            let share = k as f64 / n.max(1) as f64;
            Rectangle::new(
                [(i as f64, j as f64), (i as f64 + 1.0, j as f64 + 1.0)],
                share_color(share).filled(),
            )
        })
    }))?;
    for (j, row) in p.cells.iter().enumerate() {
        for (i, &(k, n)) in row.iter().enumerate() {
            let (cx, cy) = chart.backend_coord(&(i as f64 + 0.5, j as f64 + 0.5));
            let s = format!("{k}/{n}");
            label(root, text, cx, cy, &s, BLACK, HPos::Center, VPos::Center)?;
        }
    }
    for (i, x) in p.xs.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        label(
            root,
            text,
            px,
            py + 6,
            &compact(*x),
            BLACK,
            HPos::Center,
            VPos::Top,
        )?;
    }
    for (j, y) in p.ys.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(0.0, j as f64 + 0.5));
        label(
            root,
            text,
            px - 6,
            py,
            &compact(*y),
            BLACK,
            HPos::Right,
            VPos::Center,
        )?;
    }
    let (left, top) = chart.backend_coord(&(0.0, ny as f64));
    let (right, bottom) = chart.backend_coord(&(nx as f64, 0.0));
    label(
        root,
        text,
        (left + right) / 2,
        bottom + 30,
        &p.x_param,
        BLACK,
        HPos::Center,
        VPos::Top,
    )?;
    label(
        root,
        text,
        8,
        8,
        &format!("y: {}", p.y_param),
        BLACK,
        HPos::Left,
        VPos::Top,
    )?;
    label(
        root,
        text,
        right,
        top - 26,
        "take-offs / runs (red 0%, yellow 50%, green 100%)",
        BLACK,
        HPos::Right,
        VPos::Top,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_numbers_stay_short() {
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(12.5), "12.5");
        assert_eq!(compact(25_000.0), "25K");
        assert_eq!(compact(1_500_000.0), "1.5M");
        assert_eq!(compact(0.0034), "0.003");
    }

    #[test]
    fn share_colours_run_from_red_to_green() {
        assert_eq!(share_color(0.0), RGBColor(215, 48, 39));
        assert_eq!(share_color(1.0), RGBColor(26, 152, 80));
    }
}
