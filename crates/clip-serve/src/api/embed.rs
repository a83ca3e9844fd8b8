//! The routes that run the model: `/embed`, `/v1/embeddings`, `/rerank` and `/classify`.

use super::*;

/// `POST /embed`: texts (`inputs`) or images (`images`, base64), not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// text(s) to embed
    pub inputs: Option<OneOrMany>,
    /// base64-encoded image files (or data URIs) to embed
    pub images: Option<Vec<String>>,
    /// L2-normalise (default true)
    #[serde(default = "yes")]
    pub normalize: bool,
    /// cut texts over the context length instead of refusing them (default false)
    #[serde(default)]
    pub truncate: bool,
}

#[utoipa::path(post, path = "/embed", request_body = EmbedRequest,
    responses((status = 200, description = "one embedding per input, in order", body = Vec<Vec<f32>>),
              (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse)))]
pub async fn embed(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let d = app.emb.dim();
    let v = match body {
        Body::Form(parts) => {
            let normalize = form_bool(&parts, "normalize", true)?;
            let images = form_images(&parts);
            let texts: Vec<String> = parts
                .iter()
                .filter(|p| p.name == "inputs" || p.name == "text")
                .map(Part::text)
                .collect::<Result<_, _>>()?;
            match (images.is_empty(), texts.is_empty()) {
                (false, true) => app.embed_images(images, normalize).await?,
                (true, false) => {
                    let truncate = form_bool(&parts, "truncate", false)?;
                    app.embed_texts(&texts, truncate, normalize).await?
                }
                _ => {
                    return Err(ApiError::invalid(
                        "send either texts or images in one request",
                    ));
                }
            }
        }
        body => {
            let r: EmbedRequest = body.json()?;
            match (r.inputs, r.images) {
                (Some(t), None) => {
                    app.embed_texts(&t.into_vec(), r.truncate, r.normalize)
                        .await?
                }
                (None, Some(imgs)) => {
                    let bytes = imgs
                        .iter()
                        .enumerate()
                        .map(|(i, s)| decode_b64(s, &format!("images[{i}]")))
                        .collect::<Result<Vec<_>, _>>()?;
                    app.embed_images(bytes, r.normalize).await?
                }
                _ => {
                    return Err(ApiError::invalid(
                        "give exactly one of \"inputs\" (texts) or \"images\" (base64 image files)",
                    ));
                }
            }
        }
    };
    let rows: Vec<&[f32]> = v.chunks(d).collect();
    Ok(axum::Json(rows).into_response())
}

/// `POST /v1/embeddings` (OpenAI's shape; texts only).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenAiRequest {
    pub input: OneOrMany,
    pub model: Option<String>,
    /// "float" (default) or "base64" (little-endian f32)
    pub encoding_format: Option<String>,
    /// must equal the model's dimension when given
    pub dimensions: Option<usize>,
}

#[utoipa::path(post, path = "/v1/embeddings", request_body = OpenAiRequest,
    responses((status = 200, description = "OpenAI's embeddings list"), (status = 422, body = ErrorResponse)))]
pub async fn openai(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let r: OpenAiRequest = body.json()?;
    let d = app.emb.dim();
    if let Some(want) = r.dimensions.filter(|&w| w != d) {
        return Err(ApiError::invalid(format!(
            "dimensions {want}: this model's embeddings have {d} dimensions"
        )));
    }
    let b64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::invalid(format!(
                "encoding_format {f:?}: use \"float\" or \"base64\""
            )));
        }
    };
    let texts = r.input.into_vec();
    let tokens: usize = app
        .tokenize(&texts, false)
        .map(|rows| {
            rows.iter()
                .map(|r| r.iter().filter(|&&t| t != 0).count())
                .sum()
        })
        .unwrap_or(0);
    let v = app.embed_texts(&texts, false, true).await?;
    let data: Vec<serde_json::Value> = v
        .chunks(d)
        .enumerate()
        .map(|(i, row)| {
            let embedding = if b64 {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(row)
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "object": "list",
        "data": data,
        "model": r.model.unwrap_or_else(|| app.model.clone()),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

/// `POST /rerank`: candidates (texts, or images as base64) ordered by their cosine with the query.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RerankRequest {
    pub query: String,
    pub texts: Option<Vec<String>>,
    pub images: Option<Vec<String>>,
    /// include each text in the answer
    #[serde(default)]
    pub return_text: bool,
    #[serde(default)]
    pub truncate: bool,
}

/// One ranked candidate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rank {
    /// position in the request
    pub index: usize,
    /// cosine similarity with the query
    pub score: f32,
    /// softmax over the candidates of 100 · cosine (clip-as-service's `/rank`)
    pub probability: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[utoipa::path(post, path = "/rerank", request_body = RerankRequest,
    responses((status = 200, body = Vec<Rank>), (status = 422, body = ErrorResponse)))]
pub async fn rerank(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let (query, texts, images, return_text, truncate) = match body {
        Body::Form(parts) => {
            let q = form_field(&parts, "query")?
                .ok_or_else(|| ApiError::invalid("form field 'query' is missing"))?;
            let texts: Vec<String> = parts
                .iter()
                .filter(|p| p.name == "texts" || p.name == "text")
                .map(Part::text)
                .collect::<Result<_, _>>()?;
            let images = form_images(&parts);
            (
                q,
                (!texts.is_empty()).then_some(texts),
                (!images.is_empty()).then_some(images),
                false,
                false,
            )
        }
        body => {
            let r: RerankRequest = body.json()?;
            let images = r
                .images
                .map(|v| {
                    v.iter()
                        .enumerate()
                        .map(|(i, s)| decode_b64(s, &format!("images[{i}]")))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            (r.query, r.texts, images, r.return_text, r.truncate)
        }
    };
    let q = app.embed_texts(&[query], truncate, true).await?;
    let (cands, texts) = match (texts, images) {
        (Some(t), None) => (app.embed_texts(&t, truncate, true).await?, Some(t)),
        (None, Some(i)) => (app.embed_images(i, true).await?, None),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of \"texts\" or \"images\" as the candidates",
            ));
        }
    };
    let ranked: Vec<Rank> = clip_index::rerank::rank(&q, &cands, app.emb.dim())
        .into_iter()
        .map(|(index, score, probability)| Rank {
            index,
            score,
            probability,
            text: if return_text {
                texts.as_ref().map(|t| t[index].clone())
            } else {
                None
            },
        })
        .collect();
    Ok(axum::Json(ranked).into_response())
}

/// `POST /classify`: zero-shot class probabilities of one image.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// base64 image file
    pub image: String,
    pub labels: Vec<String>,
    /// a template set's name (e.g. "imagenet") or templates with `{}`; default "a photo of a {}."
    pub templates: Option<OneOrMany>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Prediction {
    pub label: String,
    pub score: f32,
}

#[utoipa::path(post, path = "/classify", request_body = ClassifyRequest,
    responses((status = 200, body = Vec<Prediction>), (status = 422, body = ErrorResponse)))]
pub async fn classify(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let (image, labels, templates) = match body {
        Body::Form(parts) => {
            let image = form_images(&parts)
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::invalid("form field 'image' is missing"))?;
            let labels: Vec<String> = parts
                .iter()
                .filter(|p| p.name == "labels" || p.name == "label")
                .map(Part::text)
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .flat_map(|l| l.split(',').map(|s| s.trim().to_owned()))
                .filter(|s| !s.is_empty())
                .collect();
            let t = form_field(&parts, "templates")?.map(OneOrMany::One);
            (image, labels, t)
        }
        body => {
            let r: ClassifyRequest = body.json()?;
            (decode_b64(&r.image, "image")?, r.labels, r.templates)
        }
    };
    app.check_count(labels.len(), "labels")?;
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        return Err(ApiError::invalid(format!("label {d:?} is given twice")));
    }
    let templates = match templates {
        None => vec!["a photo of a {}.".to_owned()],
        Some(OneOrMany::One(name)) if !name.contains("{}") => {
            clip_embed::templates::templates(&name).map_err(|e| ApiError::invalid(e.to_string()))?
        }
        Some(t) => t.into_vec(),
    };
    let key = (labels.clone(), templates.clone());
    let cached = app
        .classifiers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let classifier = match cached {
        Some(c) => c,
        None => {
            let emb = app.emb.clone();
            let (l, t) = key.clone();
            let c = tokio::task::spawn_blocking(move || emb.classifier(&l, &t))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            let c = Arc::new(c);
            let mut cache = app.classifiers.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= 64 {
                cache.clear();
            }
            cache.insert(key, c.clone());
            c
        }
    };
    let f = app.embed_images(vec![image], true).await?;
    let p = classifier.probabilities(&f, 1, app.emb.clip.logit_scale(), app.emb.clip.logit_bias());
    let mut out: Vec<Prediction> = labels
        .iter()
        .zip(&p)
        .map(|(l, &score)| Prediction {
            label: l.clone(),
            score,
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(axum::Json(out).into_response())
}
