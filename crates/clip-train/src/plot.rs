//! `plot.png` at the end of training: the loss (left) and zero-shot top-1 (right) against the step.

use std::path::Path;

use clip_data::chart::{self, Chart, ChartError, Series, Style};

use crate::log::StepLog;

/// Draw the loss and zero-shot curves of `history` into `path`.
pub fn write(path: &Path, history: &[StepLog]) -> Result<(), ChartError> {
    let last = history.iter().map(|h| h.step as f64).fold(1.0, f64::max);
    let loss: Vec<(f64, f64)> = history
        .iter()
        .filter(|h| h.loss.is_finite())
        .map(|h| (h.step as f64, h.loss as f64))
        .collect();
    let top = loss.iter().map(|p| p.1).fold(1e-9, f64::max);
    let zs: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|h| h.zero_shot_top1.map(|z| (h.step as f64, z * 100.0)))
        .collect();
    let panel = |title: &str, y: &str, range: (f64, f64), s: Series| Chart {
        title: title.into(),
        x_label: "step".into(),
        y_label: y.into(),
        x_range: (0.0, last),
        y_range: range,
        log2_x: false,
        series: vec![s],
    };
    chart::save_panels(
        &[
            panel(
                "training loss",
                "contrastive loss",
                (0.0, top * 1.05),
                Series::new("loss", loss, chart::BLUE, Style::Line),
            ),
            panel(
                "zero-shot top-1 during training",
                "top-1 (%)",
                (0.0, 100.0),
                Series::new("zero-shot top-1", zs, chart::ORANGE, Style::LinePoints),
            ),
        ],
        path,
    )
}
