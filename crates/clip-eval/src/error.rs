//! The error of an evaluation protocol: whatever the data, the pipeline, a probe, a chart or a
//! training run reported, or a bad argument.

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] clip_data::dataset::DataError),
    #[error(transparent)]
    Embed(#[from] clip_embed::EmbedError),
    #[error(transparent)]
    Classifier(#[from] clip_embed::zeroshot::ClassifierError),
    #[error(transparent)]
    Templates(#[from] clip_embed::templates::TemplateError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error(transparent)]
    Chart(#[from] clip_data::chart::ChartError),
    #[error(transparent)]
    Out(#[from] clip_data::out::OutError),
    #[error(transparent)]
    Train(#[from] clip_train::run::RunError),
    #[error("{0}")]
    Invalid(String),
}

/// Parse a comma-separated list of positive whole numbers (`--k 1,2,4`), naming the flag.
pub fn parse_counts(s: &str, flag: &str) -> Result<Vec<usize>, EvalError> {
    s.split(',')
        .map(|p| match p.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(EvalError::Invalid(format!(
                "{flag}: {p:?} is not a positive whole number (write e.g. {flag} 1,5,10)"
            ))),
        })
        .collect()
}

/// Write `value` as pretty JSON to `dir/name` (atomically), creating `dir`.
pub fn write_json(
    dir: &std::path::Path,
    name: &str,
    value: &impl serde::Serialize,
) -> Result<(), EvalError> {
    clip_data::out::create_dir(dir)?;
    let text =
        serde_json::to_string_pretty(value).map_err(|e| EvalError::Invalid(e.to_string()))?;
    Ok(clip_data::out::write_file(
        &dir.join(name),
        (text + "\n").as_bytes(),
    )?)
}
