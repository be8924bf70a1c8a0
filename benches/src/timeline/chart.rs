//! The timeline drawn with plotters: three panels sharing the time axis, the fault
//! windows shaded on each.

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{Fault, Point};

const FAULT: RGBColor = RGBColor(120, 120, 120);
const FONT: &str = "sans-serif";

/// Draws the three panels into `svg`.
pub(crate) fn draw(
    svg: &mut String,
    title: &str,
    points: &[Point],
    faults: &[Fault],
) -> Result<(), Box<dyn std::error::Error>> {
    let x_end = points
        .len()
        .max(
            faults
                .iter()
                .map(|f| f.to.ceil() as usize)
                .max()
                .unwrap_or(0),
        )
        .max(1) as f64;
    let root = SVGBackend::with_string(svg, (1000, 780)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 22))?;
    let (top, rest) = root.split_vertically(250);
    let (middle, bottom) = rest.split_vertically(250);

    // Requests per second.
    let rps_max = points.iter().map(|p| p.requests).max().unwrap_or(0).max(1) as f64 * 1.15;
    let mut chart = ChartBuilder::on(&top)
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(64)
        .caption("requests per second (through the gateway)", (FONT, 16))
        .build_cartesian_2d(0f64..x_end, 0f64..rps_max)?;
    mesh(&mut chart, "requests/s", None)?;
    shade(&mut chart, faults, 0.0, rps_max, true)?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.second as f64, p.requests as f64)),
            BLUE.stroke_width(2),
        ))?
        .label("requests/s")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    legend(&mut chart)?;

    // p50 and p99, log scale: a median of a millisecond and a p99 of hundreds share
    // the panel.
    let with_requests = || points.iter().filter(|p| p.requests > 0);
    let lowest = with_requests()
        .map(|p| p.p50_ms)
        .fold(f64::INFINITY, f64::min);
    let highest = with_requests().map(|p| p.p99_ms).fold(0f64, f64::max);
    let (low, high) = if lowest.is_finite() && highest > 0.0 {
        ((lowest / 2.0).max(0.001), highest * 2.0)
    } else {
        (0.1, 10.0)
    };
    let mut chart = ChartBuilder::on(&middle)
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(64)
        .caption("latency per second, ms (log scale)", (FONT, 16))
        .build_cartesian_2d(0f64..x_end, (low..high).log_scale())?;
    mesh(&mut chart, "ms", None)?;
    shade(&mut chart, faults, low, high, false)?;
    for (label, color, value) in [
        ("p50", GREEN, (|p: &Point| p.p50_ms) as fn(&Point) -> f64),
        ("p99", RED, |p: &Point| p.p99_ms),
    ] {
        chart
            .draw_series(LineSeries::new(
                with_requests().map(|p| (p.second as f64, value(p).max(low))),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    legend(&mut chart)?;

    // 5xx (and no response) per second.
    let err_max = points
        .iter()
        .map(|p| p.server_errors.max(p.no_response))
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.25;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .caption("errors per second", (FONT, 16))
        .build_cartesian_2d(0f64..x_end, 0f64..err_max)?;
    mesh(
        &mut chart,
        "responses/s",
        Some("seconds since the load started"),
    )?;
    shade(&mut chart, faults, 0.0, err_max, false)?;
    for (label, color, value) in [
        (
            "5xx",
            RED,
            (|p: &Point| p.server_errors) as fn(&Point) -> u64,
        ),
        ("no response", MAGENTA, |p: &Point| p.no_response),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.second as f64, value(p) as f64)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// Shades every fault window over `[low, high]`; names them when `named`.
fn shade<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    faults: &[Fault],
    low: f64,
    high: f64,
    named: bool,
) -> Result<(), Box<dyn std::error::Error>>
where
    Y: Ranged<ValueType = f64>,
{
    chart.draw_series(
        faults
            .iter()
            .map(|f| Rectangle::new([(f.from, low), (f.to, high)], FAULT.mix(0.18).filled())),
    )?;
    if named {
        chart.draw_series(faults.iter().map(|f| {
            Text::new(
                f.label.clone(),
                (f.from, high),
                (FONT, 12).into_font().color(&BLACK),
            )
        }))?;
    }
    Ok(())
}

/// The axes: numbers without needless decimals, no vertical grid.
fn mesh<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    y_desc: &str,
    x_desc: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .max_light_lines(0)
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| number(*v))
        .y_desc(y_desc);
    if let Some(x_desc) = x_desc {
        mesh.x_desc(x_desc);
    }
    mesh.draw()?;
    Ok(())
}

/// `v` with at most three decimals, trailing zeros dropped: 1400, 0.5, 12.25.
fn number(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn legend<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
) -> Result<(), Box<dyn std::error::Error>>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
